"""One turn, prepared the same way for the CLI's `ask`, the batch report and the UI: `prepare_turn`.

A turn is: the messages each side sees (system prompt, that side's history, the new prompt), the
shared settings and which of them the user set (the others may take each model's recommended
values, resolved when the side starts: engine.side_params), where each side's model comes from (the
pool: resident now, or loaded in the side's worker with its progress in the pane) and whether the
sides run at once or one after the other. Thread counts are not set here: the engine derives them
from the process-wide account of running streams (threads.py) when each stream starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from llm_compare.backends.base import Messages
from llm_compare.engine import Job, PairState, require_prompt, stream_pair
from llm_compare.params import GenerationParams
from llm_compare.threads import runs_here

SIDES = ("a", "b")


def messages_for(prompt: str, system: str | None = None, history: Messages = ()) -> Messages:
    """What one side's model is sent: the system prompt (if any), its history, the new prompt."""
    system_part = [{"role": "system", "content": system}] if system and system.strip() else []
    return system_part + list(history) + [{"role": "user", "content": prompt}]


@dataclass
class Turn:
    """Both sides' jobs and how they run; `stream()` runs them through the engine."""

    a: Job
    b: Job
    params: GenerationParams
    sequential: bool

    def job(self, side: str) -> Job:
        return self.a if side == "a" else self.b

    def stream(self, *, tick_s: float = 0.1, b_first: bool = False) -> Iterator[PairState]:
        return stream_pair(self.a, self.b, self.params, sequential=self.sequential, tick_s=tick_s, b_first=b_first)


def prepare_turn(
    prompt: str,
    specs: dict,
    pool,
    params: GenerationParams,
    *,
    user_set: frozenset[str] = frozenset(),
    recommended: bool = True,
    system: str | None = None,
    histories: dict | None = None,
    sequential: bool = False,
    stops: dict | None = None,
    labels: dict | None = None,
) -> Turn:
    """The turn for `prompt` on both sides. Raises UserError for an empty prompt.

    `specs`: side -> ModelSpec, or an error message (str) for a side that cannot run (shown in its
    pane). `recommended`: tunable settings not in `user_set` take each model's recommended values.
    A pool that keeps one model resident (`max_resident=1`) makes the turn sequential: each side
    loads its model when its turn comes, swapping the other out."""
    require_prompt(prompt)
    one_at_a_time = getattr(pool, "max_resident", None) == 1
    jobs = {}
    for side in SIDES:
        spec = specs[side]
        error = spec if isinstance(spec, str) else None
        label = (labels or {}).get(side) or (spec.label if error is None else side.upper())
        job = Job(side, None, messages_for(prompt, system, (histories or {}).get(side, ())), error=error,
                  label=label, recommended=recommended, user_set=frozenset(user_set),
                  runs_here=error is not None or runs_here(spec))
        if stops and side in stops:
            job.stop = stops[side]
        if error is None:
            if pool.is_loaded(spec) and not one_at_a_time:
                job.backend = pool.get(spec)
            else:  # loaded in the side's worker: its pane shows the load as it happens
                job.load = lambda spec=spec: pool.get(spec)
        jobs[side] = job
    return Turn(jobs["a"], jobs["b"], params, sequential=sequential or one_at_a_time)
