"""A scripted test backend: a fake model that replays given tokens with given delays.

For UI, engine and store tests that need a backend but not a real model (as simonw/llm's tests use
their mock model): it implements the project's `Backend` interface for real (a worker thread through
`run_in_worker`, `stop` honoured between tokens, `max_new_tokens`, prompt token counts, a context
limit, recommended settings from its spec), so the engine, the pool and the UI run unchanged on it,
and what it will say is known in advance. Tests of the real backends keep using real models.
"""

from __future__ import annotations

import threading
import time
from typing import Iterator, Sequence

from llm_compare.backends.base import Backend, Chunk, Messages, run_in_worker
from llm_compare.params import GenerationParams
from llm_compare.pool import ModelPool
from llm_compare.specs import ModelSpec, Registry
from llm_compare.ui.session import AppContext

SCRIPTED_SOURCE = "/scripted/"  # a source no loader reads: the ScriptedPool serves it
WORDS = ("The", " sky", " is", " blue", " because", " air", " scatters", " short", " waves", ".")


def scripted_spec(name: str, **fields) -> ModelSpec:
    """A registry entry for a scripted model (its source is never read: the ScriptedPool serves it)."""
    fields.setdefault("label", name.title())
    return ModelSpec(name=name, source=f"{SCRIPTED_SOURCE}{name}", **fields)


class ScriptedBackend(Backend):
    """Replays `tokens` (one text piece a token) as its reply to any prompt, waiting `delays` seconds
    before each token (a number for all, or one a token; the last repeats). `fail_at`: raise
    RuntimeError instead of yielding that token (a model crashing mid-reply). `best_threads`: its
    measured best thread count (what the engine's thread policy reads). `calls` records the
    (messages, params, threads) of every `stream`."""

    def __init__(self, spec: ModelSpec | str = "scripted", tokens: Sequence[str] = WORDS,
                 delays: float | Sequence[float] = 0.0, *, context_length: int = 512, fail_at: int | None = None,
                 best_threads: int | None = None):
        self.spec = spec if isinstance(spec, ModelSpec) else scripted_spec(spec)
        self.tokens = list(tokens)
        self.delays = [delays] if isinstance(delays, (int, float)) else list(delays)
        self.context_length, self.fail_at, self.best = context_length, fail_at, best_threads
        self.calls: list[tuple[Messages, GenerationParams, int | None]] = []
        self.closed = False

    def count_prompt_tokens(self, messages: Messages) -> int:
        """Whitespace-separated words, plus two a message (its role and its end)."""
        return sum(len((m.get("content") or "").split()) + 2 for m in messages)

    def best_threads(self) -> int | None:
        """What a thread probe would have measured (None: as a remote model, unknown)."""
        return self.best

    def delay(self, i: int) -> float:
        return self.delays[min(i, len(self.delays) - 1)] if self.delays else 0.0

    def stream(self, messages: Messages, params: GenerationParams, stop: threading.Event,
               threads: int | None = None) -> Iterator[Chunk]:
        self.calls.append((messages, params, threads))
        prompt_tokens = self.count_prompt_tokens(messages)

        def produce(emit) -> None:
            first_at = None
            for i, text in enumerate(self.tokens[:params.max_new_tokens]):
                if stop.wait(self.delay(i)):  # True: stopped while "computing" this token
                    return
                if i == self.fail_at:
                    raise RuntimeError(f"scripted failure at token {i}")
                first_at = first_at or time.perf_counter()
                emit(Chunk(text=text, tokens=1, first_token_at=first_at, threads=threads,
                           prompt_tokens=prompt_tokens if i == 0 else None))

        yield from run_in_worker(produce, stop, f"scripted-{self.spec.name}")

    def close(self) -> None:
        self.closed = True


def is_scripted(spec: ModelSpec) -> bool:
    return spec.source.startswith(SCRIPTED_SOURCE)


class ScriptedPool(ModelPool):
    """A real ModelPool whose scripted specs (`scripted_spec`) get a ScriptedBackend, made on first
    `get` from `scripts[name]` (its keyword arguments) and then reused like a loaded model; any
    other spec loads as in the real pool (a missing file fails as it would in the app)."""

    def __init__(self, scripts: dict[str, dict] | None = None, max_resident: int | None = None):
        super().__init__(max_resident)
        self.scripts = scripts or {}
        self.made: dict[str, ScriptedBackend] = {}

    def get(self, spec: ModelSpec, progress=None) -> Backend:
        if not is_scripted(spec):
            return super().get(spec, progress)
        if spec.name not in self.made or self.made[spec.name].closed:
            self.made[spec.name] = ScriptedBackend(spec, **self.scripts.get(spec.name, {}))
        return self.made[spec.name]

    def is_loaded(self, spec: ModelSpec) -> bool:
        return spec.name in self.made if is_scripted(spec) else super().is_loaded(spec)


def scripted_registry(*specs: ModelSpec) -> Registry:
    models = {s.name: s for s in specs}
    names = list(models)
    return Registry(models=models, default_pair=(names[0], names[-1]))


class ScriptedApp(AppContext):
    """The app's shared context where scripted models count as available here (blind draws)."""

    def available_names(self) -> list[str]:
        real = set(super().available_names())
        return [n for n, spec in self.registry.models.items() if n in real or is_scripted(spec)]
