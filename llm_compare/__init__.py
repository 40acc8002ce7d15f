"""llm_compare: two chat models on CPU, side by side.

Layers, bottom up: a module imports only modules on its own line or the lines above, never in a
cycle, function-local imports included (tests/test_layers.py holds this; nothing below `ui` imports
Gradio). Names are dotted under llm_compare; a package name is its __init__.py.

    basics: errors, progress, markup, threads, machine, specs, params, chat_formats, presets
    loading parts: loading.size_model, loading.gguf, loading.gguf.header, loading.quantize, loading.checkpoint,
        loading.tokenizer_base, loading.tokenizer_chatglm3, loading.tokenizer_qwen, loading.gguf.vocab,
        loading.source
    families: families.family, families.renames, families.tensors, families.gguf_metadata, families.native, families.chatglm3,
        families.qwen1, families
    loaders: loading.legacy, loading.gguf.plan, loading.gguf.unpack,
        loading.gguf.write, loading.gguf.export, loading.gguf.cache, loading.hf, loading.memory, loading
    architecture: architecture.tensors, architecture.tokens, architecture.read, architecture.legacy,
        architecture.read_gguf, architecture.sizes, architecture.sources, architecture.bandwidth,
        architecture.table, architecture.facts, architecture
    measured defaults: cpu_probe, drafts
    backends: backends.base, backends.detokenize, backends.llamacpp_eval, backends.kv_states, backends.reply_ids,
        backends.llamacpp_amx,
        backends.gguf_text, backends.sampling, backends.drafting, backends.llamacpp_exported, backends.transformers,
        backends.openai, backends.llamacpp, backends
    precision choice: gguf_probe, dtype_choice
    engine: turn, engine, pool
    votes: battle, migrations, store_queries, store, arena, ratings, style, verdict
    judge, fidelity, reports: judge, judge_local, fidelity, fidelity_view, report, report_verdict
    command line: app_flags, commands, commands.flags, commands.models, commands.export, commands.leaderboard,
        commands.arch, commands.doctor, commands.ask, commands.fidelity, commands.judge, commands.report, cli,
        __main__
    ui: ui.widgets, ui.board, ui.session, ui.arch_tab, ui.leaderboard_tab, ui.report_tab, ui.handlers,
        ui.layout, ui.from_flags
"""

__version__ = "0.1.0"
