"""Blind battles: drawing an anonymous pair, and spotting answers that give the model away.

A blind vote is only blind if the answer does not say who wrote it. `self_mentions` finds model
and maker names in an answer; the store flags such battles and the leaderboard leaves them out of
blind ratings by default (as Chatbot Arena does).
"""

from __future__ import annotations

import random
import re

from llm_compare.engine import Status
from llm_compare.errors import UserError

# Names by which a model may identify itself or its maker: one list, matched case-insensitively.
# Latin-script names match as whole words ("glm" inside "glmnet" does not count); Chinese names
# match anywhere.
SELF_NAMES = (
    "ChatGLM", "GLM", "智谱", "Zhipu",
    "通义千问", "通义", "千问", "Qwen", "阿里巴巴", "阿里云", "阿里", "Alibaba", "达摩院",
    "SmolLM", "Hugging Face", "HuggingFace",
    "ChatGPT", "GPT-4", "GPT-3.5", "OpenAI", "Llama", "Meta AI", "Mistral", "Gemini", "Claude",
    "Anthropic", "DeepSeek", "深度求索", "文心一言", "百度", "Baichuan", "百川", "零一万物",
)


def _pattern(names=SELF_NAMES) -> re.Pattern:
    parts = []
    for name in sorted(names, key=len, reverse=True):  # longest first: "通义千问" before "通义"
        escaped = re.escape(name).replace(r"\ ", r"\s*")
        parts.append(escaped if re.search(r"[\u4e00-\u9fff]", name) else rf"(?<![A-Za-z0-9]){escaped}(?![A-Za-z])")
    return re.compile("|".join(parts), re.IGNORECASE)


_SELF_PATTERN = _pattern()
_CANONICAL: dict[str, str] = {}
for _name in SELF_NAMES:  # the first spelling in the list is the one reported
    _CANONICAL.setdefault(re.sub(r"\s+", "", _name).lower(), _name)


def self_mentions(text: str) -> list[str]:
    """The model/maker names found in `text` (canonical spelling, first-appearance order, no repeats)."""
    found = []
    for m in _SELF_PATTERN.finditer(text or ""):
        name = _CANONICAL.get(re.sub(r"\s+", "", m.group(0)).lower(), m.group(0))
        if name not in found:
            found.append(name)
    return found


def draw_blind_pair(names: list[str], rng: random.Random | None = None) -> tuple[str, str]:
    """Two distinct names at random, in random left/right order: (model_a, model_b)."""
    distinct = list(dict.fromkeys(names))
    if len(distinct) < 2:
        raise UserError(
            "blind mode needs at least two different models that are available on this machine; "
            "add one to assets/models.toml or fix the paths of the listed ones (python -m llm_compare doctor)"
        )
    rng = rng or random.Random()
    a, b = rng.sample(distinct, 2)  # sample() order is itself random: that is the side assignment
    return a, b


def detect_language(text: str) -> str:
    """"Chinese" when a good part of the letters are CJK, else "English" (FastChat's labels)."""
    cjk = len(re.findall(r"[\u4e00-\u9fff]", text or ""))
    latin = len(re.findall(r"[A-Za-z]", text or ""))
    if cjk == 0 and latin == 0:
        return "unknown"
    return "Chinese" if cjk * 3 >= latin else "English"


def not_votable(state_a, state_b) -> str | None:
    """Why a finished pair is no battle to vote on, or None (one rule for the app, report and store).

    A side that failed has no answer, and a side stopped before its first token has none either:
    an answer against nothing is not a comparison. An empty reply the model chose to end is an
    answer (a bad one), and a side stopped later keeps its partial answer, marked stopped.
    """
    for st in (state_a, state_b):
        if st.status == Status.ERROR or st.error:
            return f"side {st.side.upper()} failed"
        if st.status == Status.STOPPED and not st.text and not st.metrics.new_tokens:
            return f"side {st.side.upper()} was stopped before its first token"
    return None


def stored_settings(params, spec_a, state_a, spec_b, state_b):
    """The settings stored with a battle (one rule for the app and the report): what the sides ran
    with (`state.params`; a side without them ran with the shared `params`): one set when both
    ran with the same, else each side's set by model name (the report shuffles sides)."""
    ran_a, ran_b = state_a.params or params, state_b.params or params
    if ran_a == ran_b:
        return ran_a
    return {spec_a.name: ran_a.to_dict() if ran_a else {}, spec_b.name: ran_b.to_dict() if ran_b else {}}


def record_pair(store, spec_a, state_a, spec_b, state_b, messages_a: list[dict], messages_b: list[dict] | None = None,
                *, params=None, anony: bool = False, source: str = "live", question_id: str | None = None,
                versions: dict | None = None) -> int:
    """Store a finished pair from the engine (two SideStates) as a battle; returns its id.

    messages_a/b are what each side was sent (its history plus the new user turn); each side's
    answer is appended. Side A is the left pane: pass the specs in the order the voter saw them.
    `params`: the shared settings of the turn (`stored_settings` says what is stored).
    """
    reason = not_votable(state_a, state_b)
    if reason:
        raise UserError(f"not stored for voting: {reason}")
    messages_b = messages_a if messages_b is None else messages_b
    prompt = next((m.get("content") or "" for m in reversed(messages_a) if m.get("role") == "user"), "")

    def metrics(state):
        return dict(state.metrics.to_dict(), finish_reason=state.finish_reason, status=state.status)

    return store.record_battle(
        prompt=prompt,
        model_a=spec_a.name,
        model_b=spec_b.name,
        answer_a=state_a.text,
        answer_b=state_b.text,
        conversation_a=list(messages_a) + [{"role": "assistant", "content": state_a.text}],
        conversation_b=list(messages_b) + [{"role": "assistant", "content": state_b.text}],
        spec_a=spec_a,
        spec_b=spec_b,
        params=stored_settings(params, spec_a, state_a, spec_b, state_b),
        metrics_a=metrics(state_a),
        metrics_b=metrics(state_b),
        anony=anony,
        source=source,
        question_id=question_id,
        versions=versions,
    )
