"""llm_compare: two chat models on CPU, side by side.

Layers, bottom up (nothing below `ui/` imports Gradio):
specs/params -> loading -> chat_formats -> backends -> engine -> store/ratings/report -> cli, ui.
"""

__version__ = "0.1.0"
