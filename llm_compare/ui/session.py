"""What one browser session is doing, without Gradio: two chats, one turn at a time.

`AppContext` is what every callback closes over (registry, model pool, presets, store).
`Conversation` is one session's state: each side keeps its own history, so the next prompt
continues both. `run_turn` loads both models through the pool, streams the pair through
`engine.stream_pair`, and yields `Frame`s (what both panes show now); closing it stops both
sides and keeps the partial answers.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Iterator

from llm_compare.engine import Job, PairState, SideState, stream_pair
from llm_compare.errors import UserError
from llm_compare.params import GenerationParams
from llm_compare.pool import ModelPool
from llm_compare.specs import ModelSpec, Registry

SIDES = ("a", "b")


@dataclass
class AppContext:
    """Everything shared by all sessions of one app process."""

    registry: Registry
    pool: ModelPool
    presets: list = field(default_factory=list)
    store: object | None = None  # VoteStore once the store lands
    model_a: str | None = None  # initial pickers (flags), registry names or paths
    model_b: str | None = None
    threads: dict = field(default_factory=dict)  # side -> --threads-a/-b override

    def spec(self, name: str | None, side: str) -> ModelSpec:
        spec = self.registry.resolve(name, side)
        return spec.with_overrides(threads=self.threads.get(side))

    def choices(self) -> list[tuple[str, str]]:
        """(label, name) pairs for the pickers; flag-given paths are added to the registry's."""
        items = [(s.label, n) for n, s in self.registry.models.items()]
        for name in (self.model_a, self.model_b):
            if name and name not in self.registry.models:
                items.append((self.registry.resolve(name).label, name))
        return items


@dataclass
class Run:
    """The turn in flight: its stop events (Stop A / Stop B set them) and the latest state."""

    stop: dict = field(default_factory=lambda: {s: threading.Event() for s in SIDES})
    finished: threading.Event = field(default_factory=threading.Event)
    latest: PairState | None = None

    def stop_side(self, side: str) -> None:
        self.stop[side].set()

    def stop_all(self) -> None:
        for ev in self.stop.values():
            ev.set()


@dataclass
class Conversation:
    """One session's two chats. `messages` feed the models; `shown` is what the panes display."""

    messages: dict = field(default_factory=lambda: {s: [] for s in SIDES})
    shown: dict = field(default_factory=lambda: {s: [] for s in SIDES})
    labels: dict = field(default_factory=lambda: {s: "" for s in SIDES})
    last_prompt: str | None = None
    last_state: PairState | None = None
    run: Run | None = None

    @property
    def running(self) -> bool:
        return self.run is not None and not self.run.finished.is_set()

    def clear(self) -> None:
        for s in SIDES:
            self.messages[s], self.shown[s] = [], []
        self.last_prompt, self.last_state = None, None

    def drop_last_turn(self) -> str | None:
        """Forget the last turn on both sides (for Regenerate); return its prompt."""
        prompt = self.last_prompt
        if prompt is None:
            return None
        for s in SIDES:
            msgs = self.messages[s]
            if len(msgs) >= 2 and msgs[-2] == {"role": "user", "content": prompt}:
                del msgs[-2:]
            shown = self.shown[s]
            if len(shown) >= 2 and shown[-2]["role"] == "user":
                del shown[-2:]
        self.last_state = None
        return prompt


@dataclass
class Frame:
    """What both panes show at one moment."""

    chats: dict  # side -> chatbot messages [{"role", "content"}]
    times: dict  # side -> live elapsed counter text
    stats: dict  # side -> metrics line under the pane
    status: str
    finished: bool = False
    state: PairState | None = None


def format_elapsed(st: SideState | None) -> str:
    if st is None:
        return "⏱ –"
    if st.status in ("waiting", "loading"):
        return f"⏱ – · {st.status}"
    return f"⏱ {st.metrics.elapsed_s:.1f} s · {st.status}"


def format_stats(st: SideState | None) -> str:
    if st is None or st.status in ("waiting", "error") and not st.metrics.new_tokens:
        return "first token – · 0 new tokens · – tok/s · peak memory –"
    m = st.metrics
    ttft = f"{m.ttft_s:.2f} s" if m.ttft_s is not None else "–"
    rate = f"{m.tokens_per_s:.1f}" if m.tokens_per_s else "–"
    mem = f"{m.peak_rss_bytes / 2**30:.2f} GiB" if m.peak_rss_bytes else "–"
    return f"first token {ttft} · {m.new_tokens} new tokens · {rate} tok/s · peak memory {mem}"


def pane_text(st: SideState) -> str:
    """The assistant bubble for one side: the reply, a stop/length mark, or the error."""
    if st.status == "error":
        partial = f"{st.text}\n\n" if st.text else ""
        return f"{partial}⚠️ **Error:** {st.error}"
    if st.status == "loading":
        return f"⏳ loading {st.label} …"
    if st.status == "waiting" and not st.text:
        return "…"
    text = (st.text or ("…" if st.status == "running" else "")).removesuffix("\ufffd")  # a cut-off character
    if st.status == "stopped":
        text += "\n\n*[stopped]*"
    elif st.finish_reason == "length":
        text += "\n\n*[reached max new tokens]*"
    return text


def render(conv: Conversation, state: PairState | None, status: str, prompt: str | None = None) -> Frame:
    chats, times, stats = {}, {}, {}
    for s in SIDES:
        chat = list(conv.shown[s])
        st = state.side(s) if state else None
        if prompt is not None:
            chat.append({"role": "user", "content": prompt})
            chat.append({"role": "assistant", "content": pane_text(st) if st else "…"})
        chats[s], times[s], stats[s] = chat, format_elapsed(st), format_stats(st)
    return Frame(chats, times, stats, status, finished=bool(state and state.finished), state=state)


def _loading_state(labels: dict, loading: str) -> PairState:
    sides = {s: SideState(side=s, label=labels[s], status="loading" if s == loading else "waiting") for s in SIDES}
    return PairState(a=sides["a"], b=sides["b"])


def run_turn(
    ctx: AppContext,
    conv: Conversation,
    prompt: str,
    names: dict,
    params: GenerationParams,
    *,
    system: str = "",
    sequential: bool = False,
    tick_s: float = 0.1,
    labels: dict | None = None,
) -> Iterator[Frame]:
    """One turn on both sides. Raises UserError (before anything runs) for an empty prompt or a
    turn already in flight; a side that fails to load or to generate shows its error in its pane."""
    if not (prompt or "").strip():
        raise UserError("the prompt is empty; type a question or pick a preset")
    if conv.running:
        raise UserError("a comparison is already running in these panes; wait for it or press Stop")
    run = conv.run = Run()
    shown_labels = labels or {}
    try:
        jobs = {}
        for s in SIDES:
            spec = None
            try:
                spec = ctx.spec(names.get(s), s)
                conv.labels[s] = shown_labels.get(s) or spec.label
                if not ctx.pool.is_loaded(spec):
                    yield render(conv, _loading_state(conv.labels, s), f"loading {conv.labels[s]} …", prompt)
                backend, error = ctx.pool.get(spec), None
            except UserError as e:
                backend, error = None, str(e)
            except Exception as e:  # a broken model file must not take the app down
                backend, error = None, f"could not load {spec.name if spec else names.get(s)}: {type(e).__name__}: {e}"
            history = ([{"role": "system", "content": system}] if system.strip() else []) + conv.messages[s]
            jobs[s] = Job(s, backend, history + [{"role": "user", "content": prompt}], stop=run.stop[s],
                          error=error, label=conv.labels[s])
        live = [j for j in jobs.values() if j.backend is not None]
        for j in live:
            j.backend.concurrent_streams = 1 if sequential else len(live)
        pair = stream_pair(jobs["a"], jobs["b"], params, sequential=sequential, tick_s=tick_s)
        try:
            for state in pair:
                run.latest = state
                yield render(conv, state, "generating …" if not state.finished else "done", prompt)
        finally:
            pair.close()  # a closed turn (Stop, tab closed) stops both workers here
    finally:
        run.stop_all()
        _commit(conv, run.latest, prompt)
        run.finished.set()


def _commit(conv: Conversation, state: PairState | None, prompt: str) -> None:
    """Keep the turn in each side's history; a side that errored keeps it only on screen."""
    if state is not None and not state.finished:  # closed mid-stream: what ran was stopped
        state = PairState(*(st if st.finished else dataclasses.replace(st, status="stopped", finish_reason="stopped")
                            for st in (state.a, state.b)))
    conv.last_prompt, conv.last_state = prompt, state
    for s in SIDES:
        st = state.side(s) if state else None
        conv.shown[s] += [{"role": "user", "content": prompt},
                          {"role": "assistant", "content": pane_text(st) if st else "⚠️ **Error:** not started"}]
        if st is not None and st.status != "error":
            conv.messages[s] += [{"role": "user", "content": prompt}, {"role": "assistant", "content": st.text}]


def final_frame(conv: Conversation, status: str = "") -> Frame:
    """The panes after a turn ended (used after Stop, when the cancelled stream could not say so)."""
    frame = render(conv, None, status)
    st = conv.last_state
    for s in SIDES:
        if st is not None:
            frame.times[s], frame.stats[s] = format_elapsed(st.side(s)), format_stats(st.side(s))
    frame.state, frame.finished = st, True
    return frame
