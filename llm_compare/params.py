"""Generation settings shared by both sides, so a comparison is fair."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from llm_compare.errors import UserError
from llm_compare.specs import check_max_new_tokens

TUNABLE = ("temperature", "top_p", "repetition_penalty")  # the settings a model may recommend


SEED_MAX = 2**32 - 1  # llama.cpp seeds are 32-bit; torch generators and servers take these too
SEED_RULE = f"a whole number from 0 to {SEED_MAX}, or -1 for a new random seed each time"


def parse_seed(value) -> int | None:
    """A seed as given by a flag, the UI's box or an API call; blank or negative: None (random)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value) if isinstance(value, str) else value
        seed = int(number)
        if seed != number:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"seed must be {SEED_RULE} (got {value!r})") from None
    if seed < 0:
        return None
    check_seed(seed)
    return seed


def check_seed(seed) -> None:
    """None (random) or a whole number every backend accepts."""
    if seed is not None and not (type(seed) is int and 0 <= seed <= SEED_MAX):
        raise UserError(f"seed must be {SEED_RULE} (got {seed!r})")


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 256
    greedy: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        check_max_new_tokens(self.max_new_tokens)
        if not self.greedy and not (self.temperature > 0):
            raise UserError(f"temperature must be above 0 when sampling (got {self.temperature}); or use greedy")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top-p must be in (0, 1] (got {self.top_p})")
        if not self.repetition_penalty > 0:
            raise UserError(f"repetition penalty must be above 0 (got {self.repetition_penalty})")
        check_seed(self.seed)

    def replace(self, **changes) -> "GenerationParams":
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def settings_from_input(max_new_tokens, greedy, seed=None, **tunable) -> tuple[GenerationParams, frozenset[str]]:
    """The shared settings from what a user gave (CLI flags or UI sliders), and which tunable ones they set.

    A tunable value of None means "not set": the default here, and the model's recommended value
    where a turn uses recommendations (engine.side_params). A seed of None, "" or below 0 means random.
    """
    unknown = set(tunable) - set(TUNABLE)
    if unknown:
        raise TypeError(f"not tunable settings: {', '.join(sorted(unknown))}")
    seed = parse_seed(seed)
    user_set = frozenset(k for k, v in tunable.items() if v is not None)
    params = GenerationParams(max_new_tokens=int(max_new_tokens), greedy=bool(greedy), seed=seed)
    return params.replace(**{k: float(tunable[k]) for k in user_set}), user_set
