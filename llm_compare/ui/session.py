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

from llm_compare.arena import draw_blind_pair, not_votable, record_pair
from llm_compare.engine import PairState, SideState, Status, require_prompt
from llm_compare.errors import UserError
from llm_compare.loading import resolve_source
from llm_compare.params import GenerationParams
from llm_compare.pool import ModelPool
from llm_compare.specs import ModelSpec, Registry
from llm_compare.turn import SIDES, Turn, prepare_turn


@dataclass
class AppContext:
    """Everything shared by all sessions of one app process."""

    registry: Registry
    pool: ModelPool
    presets: list = field(default_factory=list)
    store: object | None = None  # the VoteStore (None: votes are off)
    model_a: str | None = None  # initial pickers (flags), registry names or paths
    model_b: str | None = None
    threads: dict = field(default_factory=dict)  # side -> --threads-a/-b override
    dtypes: dict = field(default_factory=dict)  # side -> --dtype-a/-b override
    contexts: dict = field(default_factory=dict)  # side -> --context-a/-b override
    one_at_a_time: bool = False  # --one-model-at-a-time: pool keeps one model; turns run A then B
    trust_remote_code: bool = False  # --trust-remote-code: the user's explicit permission

    def spec(self, name: str | None, side: str) -> ModelSpec:
        spec = self.registry.resolve(name, side)
        return spec.with_overrides(threads=self.threads.get(side), dtype=self.dtypes.get(side),
                                   context=self.contexts.get(side),
                                   trust_remote_code=True if self.trust_remote_code else None)

    def available_names(self) -> list[str]:
        """Registry models that can load here: a local source that exists, or a server (blind draws use these)."""
        names = []
        for name, spec in self.registry.models.items():
            if spec.backend == "openai":
                names.append(name)
                continue
            try:
                if resolve_source(spec.source).kind != "hub":  # a hub id would need a download
                    names.append(name)
            except UserError:
                pass
        return names

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
    stopped_by_user: bool = False  # Stop both was pressed while this turn ran

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
    blind: bool = False  # this conversation's models were drawn at random and are hidden
    names: dict = field(default_factory=dict)  # side -> model name of the current conversation
    real_labels: dict = field(default_factory=dict)  # side -> display name, shown once revealed
    battle_id: int | None = None  # the last finished turn, stored as a battle
    voted: str | None = None  # the vote on battle_id
    self_words: list = field(default_factory=list)  # model names the last answers gave away
    note: str = ""  # why the last turn was not stored, if it was not

    @property
    def running(self) -> bool:
        return self.run is not None and not self.run.finished.is_set()

    def clear(self) -> None:
        for s in SIDES:
            self.messages[s], self.shown[s] = [], []
        self.last_prompt, self.last_state = None, None
        self.blind, self.names, self.real_labels = False, {}, {}
        self.battle_id, self.voted, self.self_words, self.note = None, None, [], ""

    @property
    def can_vote(self) -> bool:
        return self.battle_id is not None and self.voted is None and not self.running

    @property
    def hidden(self) -> bool:
        """Blind and not yet voted on: show "Model A/B", not the names."""
        return self.blind and self.voted is None

    def shown_label(self, side: str) -> str:
        if self.hidden:
            return f"Model {side.upper()}"
        return self.real_labels.get(side) or self.labels[side]

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
        self.last_state, self.battle_id, self.voted = None, None, None
        return prompt

    def start(self, ctx: "AppContext", picked: dict, blind: bool, blind_pool: list | None) -> dict:
        """Which models this turn runs: the pickers', or in blind mode a random pair that stays
        hidden for the whole conversation. A vote ends a blind conversation: the next turn draws anew."""
        if blind:
            if not self.blind or self.voted is not None or not self.names:
                self.clear()
                available = ctx.available_names()  # never draw a model whose files are not on this machine
                pool = [n for n in (blind_pool or available) if n in available]
                self.names = dict(zip(SIDES, draw_blind_pair(pool)))
                self.blind = True
        else:
            if self.blind:  # leaving blind mode starts a new conversation
                self.clear()
            self.names = {s: picked.get(s) for s in SIDES}
        self.battle_id, self.voted, self.self_words, self.note = None, None, [], ""
        return self.names


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
    if st.status == Status.LOADING:  # the counter runs: the wait for a model is part of what the user sees
        return f"⏱ {st.metrics.elapsed_s:.1f} s · loading model"
    wait = f" · model load {st.model_wait_s:.1f} s" if st.model_wait_s is not None else ""
    if st.status == Status.WAITING:
        return f"⏱ – · waiting{wait}"
    return f"⏱ {st.metrics.elapsed_s:.1f} s · {st.status}{wait}"


def format_stats(st: SideState | None) -> str:
    if st is None or st.status in (Status.WAITING, Status.ERROR) and not st.metrics.new_tokens:
        return "first token – · 0 new tokens · – tok/s · peak memory –"
    m = st.metrics
    ttft = f"{m.ttft_s:.2f} s" if m.ttft_s is not None else "–"
    if m.reused_tokens and m.prompt_tokens:  # the part of the conversation the model did not re-read
        ttft += f" ({m.reused_tokens} of {m.prompt_tokens} prompt tokens reused)"
    rate = f"{m.tokens_per_s:.1f}" if m.tokens_per_s else "–"
    mem = f"{m.peak_rss_bytes / 2**30:.2f} GiB" if m.peak_rss_bytes else "–"
    threads = f" · {_counted(m.threads, 'thread')}" if m.threads else ""
    if m.threads and m.streams_running:  # why a stream has fewer threads than cores: others share them
        threads += f" ({_counted(m.streams_running, 'stream')} on this CPU)"
    drafted = f" ({m.draft_tokens} from drafts)" if m.draft_tokens else ""
    return f"first token {ttft} · {m.new_tokens} new tokens{drafted} · {rate} tok/s · peak memory {mem}{threads}"


def _counted(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def pane_text(st: SideState) -> str:
    """The assistant bubble for one side: the reply, a stop/length mark, or the error."""
    if st.status == Status.ERROR:
        partial = f"{st.text}\n\n" if st.text else ""
        return f"{partial}⚠️ **Error:** {st.error}"
    if st.status == Status.LOADING:
        return f"⏳ {st.activity or f'loading {st.label}'} … ({st.metrics.elapsed_s:.0f} s)"
    if st.status == Status.WAITING and not st.text:
        return "…"
    text = st.text or ("…" if st.status == Status.RUNNING else "*[empty reply]*")
    if st.status == Status.STOPPED:
        text += "\n\n*[stopped]*"
    elif st.finish_reason == "length":
        text += "\n\n*[reached max new tokens]*"
    elif st.finish_reason == "context":
        text += "\n\n*[the conversation filled the model's context]*"
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


def run_turn(
    ctx: AppContext,
    conv: Conversation,
    prompt: str,
    picked: dict,
    params: GenerationParams,
    *,
    system: str = "",
    sequential: bool = False,
    tick_s: float = 0.1,
    blind: bool = False,
    blind_pool: list | None = None,
    recommended: bool = True,
) -> Iterator[Frame]:
    """One turn on both sides. Raises UserError (before anything runs) for an empty prompt, a turn
    already in flight, or a blind pool without two models; a side that fails to load or to
    generate shows its error in its pane, a side whose model loads shows the load as it happens.
    A turn where both sides answered is stored as a battle.
    `recommended`: a model's recommended sampling settings override the shared ones."""
    require_prompt(prompt)
    if conv.running:
        raise UserError("a comparison is already running in these panes; wait for it or press Stop")
    names = conv.start(ctx, picked, blind, blind_pool)
    run = conv.run = Run()
    specs, turn = {}, None
    try:
        for s in SIDES:
            try:
                specs[s] = ctx.spec(names.get(s), s)
                conv.real_labels[s] = specs[s].label
            except UserError as e:
                specs[s] = str(e)
            conv.labels[s] = conv.shown_label(s)
        turn = prepare_turn(prompt, specs, ctx.pool, params, recommended=recommended, system=system,
                            histories=conv.messages, sequential=sequential, stops=run.stop, labels=conv.labels)
        pair = turn.stream(tick_s=tick_s)
        try:
            for state in pair:
                run.latest = state
                yield render(conv, state, "generating …" if not state.finished else "done", prompt)
        finally:
            pair.close()  # a closed turn (Stop, tab closed) stops both workers here
    finally:
        run.stop_all()
        state = _commit(conv, run.latest, prompt)
        _record(ctx, conv, state, turn, params)
        run.finished.set()


def _record(ctx: AppContext, conv: Conversation, state: PairState | None, turn: Turn | None, params) -> None:
    """Store the finished turn as a battle to vote on (both sides must have answered)."""
    if ctx.store is None:
        conv.note = "votes are off (no vote database)"
        return
    reason = "a side failed" if state is None or turn is None else not_votable(state.a, state.b)
    if reason:  # arena.not_votable: a failed side, or one stopped before its first token
        conv.note = f"not stored for voting: {reason}"
        return
    try:
        spec_a, spec_b = (turn.job(s).backend.spec for s in SIDES)  # as loaded (a measured "auto" dtype resolved)
        conv.battle_id = record_pair(ctx.store, spec_a, state.a, spec_b, state.b, turn.a.messages, turn.b.messages,
                                     params=params, anony=conv.blind, source="live")
        conv.self_words = ctx.store.get_battle(conv.battle_id).self_words
    except UserError as e:
        conv.note = f"not stored for voting: {e}"


def _commit(conv: Conversation, state: PairState | None, prompt: str) -> PairState | None:
    """Keep the turn in each side's history; a side that errored keeps it only on screen."""
    if state is not None and not state.finished:  # closed mid-stream: what ran was stopped
        state = PairState(*(st if st.finished else dataclasses.replace(st, status=Status.STOPPED, finish_reason="stopped")
                            for st in (state.a, state.b)))
    conv.last_prompt, conv.last_state = prompt, state
    for s in SIDES:
        st = state.side(s) if state else None
        conv.shown[s] += [{"role": "user", "content": prompt},
                          {"role": "assistant", "content": pane_text(st) if st else "⚠️ **Error:** not started"}]
        if st is not None and st.status != Status.ERROR:
            conv.messages[s] += [{"role": "user", "content": prompt}, {"role": "assistant", "content": st.text}]
    return state


def vote(ctx: AppContext, conv: Conversation, outcome: str) -> None:
    """The one vote on the last battle; reveals blind names."""
    if ctx.store is None:
        raise UserError("votes are off: start the app with a vote database (--db)")
    if conv.running:
        raise UserError("wait until both answers have finished, then vote")
    if conv.battle_id is None:
        raise UserError("nothing to vote on yet: send a prompt and wait for both answers")
    if conv.voted is not None:
        raise UserError("this turn already has your vote; send the next prompt to vote again")
    ctx.store.record_vote(conv.battle_id, outcome)
    conv.voted = outcome
    for s in SIDES:
        conv.labels[s] = conv.shown_label(s)


def final_frame(conv: Conversation, status: str = "") -> Frame:
    """The panes after a turn ended (used after Stop, when the cancelled stream could not say so)."""
    frame = render(conv, None, status)
    st = conv.last_state
    for s in SIDES:
        if st is not None:
            frame.times[s], frame.stats[s] = format_elapsed(st.side(s)), format_stats(st.side(s))
    frame.state, frame.finished = st, True
    return frame
