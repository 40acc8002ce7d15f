"""Streaming and measurement: one reply (`stream_reply`) or two at once (`stream_pair`).

Every backend is timed here, the same way, so figures are comparable across backends:
time to first token (from the call to the first new token), decode tokens/s (new tokens after
the first, over the time after the first), elapsed, and the process's peak resident memory.
Nothing here imports Gradio: the CLI, the batch report and the UI all drive these functions.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import resource
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Callable, Iterator

from llm_compare import progress
from llm_compare.backends.base import Backend, Messages
from llm_compare.errors import UserError
from llm_compare.params import GenerationParams
from llm_compare.threads import STREAMS, Seat, threads_for_stream

log = logging.getLogger(__name__)


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Metrics:
    ttft_s: float | None = None
    elapsed_s: float = 0.0
    new_tokens: int = 0
    tokens_per_s: float | None = None  # decode rate, excludes the first token's wait
    peak_rss_bytes: int = 0
    prompt_tokens: int | None = None
    reused_tokens: int | None = None  # of prompt_tokens, kept from the model's KV cache (None: not known)
    threads: int | None = None  # CPU threads of this stream: derived from the account, then as its backend reports
    streams_running: int | None = None  # local streams running (itself included) when it started
    draft_tokens: int = 0  # new tokens that came from drafts the model verified (prompt lookup, drafts.py)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class ReplyUpdate:
    delta: str
    text: str
    metrics: Metrics
    done: bool = False
    finish_reason: str | None = None  # "stop" (end of reply) | "length" | "context" (filled it) | "stopped"


def last_user_text(messages: Messages) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return m.get("content") or ""
    return ""


def require_prompt(text: str | None) -> None:
    """The one empty-prompt check (the CLI, the report and the UI all reach it)."""
    if not (text or "").strip():
        raise UserError("the prompt is empty; type a question or pick a preset")


def check_prompt(backend: Backend, messages: Messages, params: GenerationParams) -> tuple[int | None, int, bool]:
    """Refuse what the model cannot take; return (prompt tokens, max new tokens that fit, whether the
    model's context rather than the user's max new tokens is what bounds the reply)."""
    require_prompt(last_user_text(messages))
    n_prompt = backend.count_prompt_tokens(messages)
    limit = backend.context_length
    max_new, context_bound = params.max_new_tokens, False
    if n_prompt is not None and limit:
        if n_prompt >= limit:
            raise UserError(
                f"the prompt is {n_prompt} tokens but {backend.label} takes at most {limit}; "
                f"shorten it or clear the conversation{backend.context_fix}"
            )
        context_bound = limit - n_prompt < max_new
        max_new = min(max_new, limit - n_prompt)
    if backend.drops_last_token and max_new > 1:
        max_new -= 1  # reproduce the original chat(): same reply text, honest token count
    return n_prompt, max_new, context_bound


def stream_reply(
    backend: Backend, messages: Messages, params: GenerationParams, stop: threading.Event | None = None,
    *, seat: Seat | None = None,
) -> Iterator[ReplyUpdate]:
    """Stream one reply with live metrics. Closing the iterator stops generation.

    `seat`: this stream's place in the process-wide account (threads.STREAMS), taken by the caller
    when several streams start together; otherwise one is taken here. The stream's thread count is
    derived from the account when it starts."""
    if seat is None and backend.runs_here:
        seat = STREAMS.take(1)[0]
    try:
        yield from _stream_counted(backend, messages, params, stop or threading.Event())
    finally:
        if seat is not None:
            seat.release()


def _stream_counted(backend: Backend, messages: Messages, params: GenerationParams, stop) -> Iterator[ReplyUpdate]:
    t0 = time.perf_counter()
    n_prompt, max_new, context_bound = check_prompt(backend, messages, params)
    if max_new != params.max_new_tokens:
        params = params.replace(max_new_tokens=max_new)
    running = STREAMS.running if backend.runs_here else None  # a server's threads are its own business
    threads = threads_for_stream(backend.spec, running, backend.best_threads()) if running else None
    m = Metrics(prompt_tokens=n_prompt, peak_rss_bytes=peak_rss_bytes(), threads=threads, streams_running=running)
    text = ""
    first_at = last_at = None
    for chunk in backend.stream(messages, params, stop, threads=threads):
        now = time.perf_counter()
        if chunk.prompt_tokens is not None:
            m.prompt_tokens = chunk.prompt_tokens
        if chunk.reused_tokens is not None:
            m.reused_tokens = chunk.reused_tokens
        if chunk.threads is not None:  # what the generating thread really runs with
            m.threads = chunk.threads
        if chunk.tokens and first_at is None:
            first_at = chunk.first_token_at or now
            m.ttft_s = first_at - t0
        if chunk.tokens:
            last_at = now
        m.new_tokens += chunk.tokens
        m.draft_tokens += chunk.drafted
        text += chunk.text
        m.elapsed_s = now - t0
        if first_at is not None and m.new_tokens > 1 and last_at > first_at:
            m.tokens_per_s = (m.new_tokens - 1) / (last_at - first_at)
        m.peak_rss_bytes = peak_rss_bytes()
        yield ReplyUpdate(delta=chunk.text, text=text, metrics=dataclasses.replace(m))
    m.elapsed_s = time.perf_counter() - t0
    m.peak_rss_bytes = peak_rss_bytes()
    if stop.is_set():
        reason = "stopped"
    elif m.new_tokens >= params.max_new_tokens:
        reason = "context" if context_bound else "length"
    else:
        reason = "stop"
    if reason != "stop":
        text = text.removesuffix("\ufffd")  # a multi-byte character cut in half by the limit or a stop
    yield ReplyUpdate(delta="", text=backend.finish_text(text), metrics=m, done=True, finish_reason=reason)


def side_params(backend: Backend, shared: GenerationParams, recommended: bool,
                user_set: frozenset[str] = frozenset()) -> GenerationParams:
    """This side's settings: the shared ones, or with `recommended`, the model's recommended values
    for the tunable settings the user did not set (`user_set`)."""
    if not recommended:
        return shared
    values = {k: v for k, v in backend.recommended_generation().items() if k not in user_set}
    return shared.replace(**values) if values else shared


class Status(StrEnum):
    """Where a pane is. A str: stored metrics, JSON and the pane's text keep the plain words."""

    WAITING = "waiting"  # its turn has not come (sequential) or its model is being looked up
    LOADING = "loading"  # its model is loading
    RUNNING = "running"
    DONE = "done"  # the reply ended: the model's end, max_new_tokens or the context
    STOPPED = "stopped"  # a user stopped it (the text so far is kept)
    ERROR = "error"

    @property
    def finished(self) -> bool:
        return self in (Status.DONE, Status.STOPPED, Status.ERROR)


@dataclass
class SideState:
    """What one pane shows: the reply so far, its status and metrics."""

    side: str
    label: str
    text: str = ""
    status: Status = Status.WAITING
    activity: str = ""  # what a loading side is doing now (progress.status lines)
    error: str | None = None
    finish_reason: str | None = None
    metrics: Metrics = field(default_factory=Metrics)
    started_at: float | None = None  # when this side began loading or generating (the counter's zero)
    model_wait_s: float | None = None  # seconds this side waited for its model (a first load or a swap)
    params: GenerationParams | None = None  # the settings this side ran with

    def __post_init__(self):
        self.status = Status(self.status)  # a plain word ("done") is read as its Status; others refused

    @property
    def finished(self) -> bool:
        return self.status.finished

    def snapshot(self, now: float) -> "SideState":
        m = dataclasses.replace(self.metrics)
        if self.status in (Status.RUNNING, Status.LOADING) and self.started_at is not None:
            m.elapsed_s = now - self.started_at  # the live counter ticks between tokens too
        return dataclasses.replace(self, metrics=m)


@dataclass
class PairState:
    a: SideState
    b: SideState

    @property
    def finished(self) -> bool:
        return self.a.finished and self.b.finished

    def side(self, name: str) -> SideState:
        return self.a if name == "a" else self.b


@dataclass
class Job:
    """One side of a pair run: what to run it on. `error` marks a side that could not start."""

    side: str
    backend: Backend | None
    messages: Messages
    stop: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    label: str = ""
    params: GenerationParams | None = None  # this side's settings, when not the shared ones
    recommended: bool = False  # tunable settings the user did not set take the model's recommended values
    user_set: frozenset[str] = frozenset()  # the tunable settings the user set (kept with `recommended`)
    load: Callable[[], Backend] | None = None  # called in this side's worker when its turn comes
    seat: Seat | None = None  # its place in the account of running streams (taken by stream_pair)
    runs_here: bool | None = None  # uses this CPU (threads.runs_here of its spec); None: ask its backend

    def uses_cpu(self) -> bool:
        """Whether this side's stream takes a seat in the account of this machine's streams."""
        if self.backend is not None:
            return self.backend.runs_here
        return self.runs_here is not False


_DONE = object()


def _apply(st: SideState, kind, payload) -> None:
    """One message from a side's worker, applied to what its pane shows."""
    if kind == "loading":
        st.status, st.started_at = Status.LOADING, payload
    elif kind == "activity":
        st.activity = payload
    elif kind == "loaded":
        st.model_wait_s, st.activity = payload, ""
    elif kind == "start":
        st.status, (st.started_at, st.params) = Status.RUNNING, payload
    elif kind == "update":
        st.text, st.metrics = payload.text, payload.metrics
        if payload.done:
            st.finish_reason = payload.finish_reason
            st.status = Status.STOPPED if payload.finish_reason == "stopped" else Status.DONE
    elif kind == "error":
        st.status, st.error = Status.ERROR, payload
    elif kind is _DONE and not st.finished:
        st.status = Status.STOPPED


def _load(job: Job, out: queue.Queue) -> None:
    """Load this side's model in its worker; what the loader reports shows in the pane as it happens."""
    out.put((job.side, "loading", time.perf_counter()))
    t0 = time.perf_counter()
    with progress.reporting(lambda text: out.put((job.side, "activity", text))):
        job.backend = job.load()
        job.backend.best_threads()  # a first-use thread measurement belongs to the wait, not the reply
        job.backend.draft_probe()  # and so does the drafting probe's
    out.put((job.side, "loaded", time.perf_counter() - t0))


def _run_side(job: Job, params: GenerationParams, out: queue.Queue) -> None:
    seat = job.seat
    try:
        if job.stop.is_set():  # stopped before its turn came (sequential): don't load or run
            return
        if job.backend is None and job.load is not None:
            _load(job, out)
        own = job.params or side_params(job.backend, params, job.recommended, job.user_set)
        if seat is None and job.uses_cpu():
            seat = STREAMS.take(1)[0]
        out.put((job.side, "start", (time.perf_counter(), own)))
        for upd in stream_reply(job.backend, job.messages, own, job.stop, seat=seat):
            out.put((job.side, "update", upd))
    except UserError as e:
        out.put((job.side, "error", str(e)))
    except Exception as e:  # a model that raises mid-stream must not take the other pane down
        log.exception("side %s failed", job.side)
        out.put((job.side, "error", f"{job.label or job.side} failed: {type(e).__name__}: {e}"))
    finally:
        if seat is not None:
            seat.release()
        out.put((job.side, _DONE, None))


def _initial_state(job: Job) -> SideState:
    st = SideState(side=job.side, label=job.label or (job.backend.label if job.backend else job.side))
    if job.error:
        st.status, st.error = Status.ERROR, job.error
    return st


def stream_pair(
    job_a: Job, job_b: Job, params: GenerationParams, *, sequential: bool = False, tick_s: float = 0.1,
    b_first: bool = False,
) -> Iterator[PairState]:
    """Run two replies and yield both panes' state on every change and every `tick_s`.

    Concurrent by default (both share the CPU: both take their seats in the stream account before
    either starts); `sequential=True` is fair timing: B starts when A ends (A when B ends with
    `b_first`; the yielded state keeps A as `a` either way). A job without a backend
    loads it in its own worker, the load showing in its pane. Each side's failure is confined to that
    side. Closing the iterator stops both sides and waits for their workers to end.
    """
    states = {job.side: _initial_state(job) for job in (job_a, job_b)}
    runnable = [j for j in ((job_b, job_a) if b_first else (job_a, job_b)) if not j.error]
    if not sequential:
        here = [j for j in runnable if j.uses_cpu()]
        for job, seat in zip(here, STREAMS.take(len(here))):
            job.seat = seat
    out: queue.Queue = queue.Queue()

    def run_all(jobs):
        for job in jobs:
            _run_side(job, params, out)

    groups = [runnable] if sequential else [[j] for j in runnable]
    threads = [threading.Thread(target=run_all, args=(g,), daemon=True, name=f"pair-{g[0].side}") for g in groups if g]
    pending = len(runnable)
    for t in threads:
        t.start()

    def snapshot():
        now = time.perf_counter()
        return PairState(a=states[job_a.side].snapshot(now), b=states[job_b.side].snapshot(now))

    try:
        yield snapshot()
        while pending:
            try:
                item = out.get(timeout=tick_s)
            except queue.Empty:
                yield snapshot()
                continue
            while True:  # apply everything queued, then show it once
                side, kind, payload = item
                if kind is _DONE:
                    pending -= 1
                _apply(states[side], kind, payload)
                try:
                    item = out.get_nowait()
                except queue.Empty:
                    break
            yield snapshot()
    finally:
        if pending:
            for job in runnable:
                job.stop.set()
        for t in threads:
            t.join()
