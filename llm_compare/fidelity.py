"""Token-level fidelity of model B to reference model A, as `llama-perplexity --kl-divergence` measures it.

Both models read the same token ids teacher-forced (`Backend.prompt_logits`); at every scored
position we compare A's and B's next-token distributions: whether their most likely token is the
same (top-1 agreement), the KL divergence of B from A, KL(A‖B) = Σ p_A (log p_A − log p_B), and
each model's log-likelihood of the actual next token (perplexity). Logits arrive in bounded blocks;
only the per-position KL floats and running sums are kept, so memory stays small on long texts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from llm_compare.backends.base import block_rows
from llm_compare.engine import stream_reply
from llm_compare.errors import UserError
from llm_compare.params import GenerationParams
from llm_compare.turn import messages_for

# A text whose ids differ between any two different vocabularies: English, Chinese, digits, code,
# markup and special-token strings. (No rare symbols such as "½": one vocabulary's GGUF and HF
# pre-tokenizers may split those differently, which does not matter here: both models read A's ids.)
PROBE_TEXT = ("The quick brown fox jumps over the lazy dog 1234567890. 请说出以下两句话区别在哪里？ "
              "def f(x):\n    return x ** 2  # <|im_start|> <s> </s> [gMASK] <|endoftext|> café naïve 🙂")


@dataclass
class Fidelity:
    """Agreement of B with A over one scored text (or all of them: `merged`)."""

    label: str
    positions: int = 0  # scored positions
    agree: int = 0  # positions where both argmaxes are the same token
    nll_a: float = 0.0  # summed −log p(actual next token)
    nll_b: float = 0.0
    kl: list = field(default_factory=list)  # float64 KL(A‖B) per scored position, in order
    first_split: int | None = None  # first scored position (0-based) whose argmaxes differ
    note: str = ""  # what was cut or skipped
    parts: int = 0  # `merged`: how many texts, and in how many the greedy choices part
    parted: int = 0

    def to_dict(self) -> dict:
        kl = np.asarray(self.kl, dtype=np.float64)
        n = self.positions
        return {
            "label": self.label, "positions": n,
            "top1_agreement": self.agree / n if n else None,
            "kl_mean": float(kl.mean()) if n else None,
            "kl_median": float(np.median(kl)) if n else None,
            "kl_p99": float(np.percentile(kl, 99)) if n else None,
            "kl_max": float(kl.max()) if n else None,
            "ppl_a": math.exp(self.nll_a / n) if n else None,
            "ppl_b": math.exp(self.nll_b / n) if n else None,
            "first_split": self.first_split, "note": self.note,
            **({"texts": self.parts, "texts_parted": self.parted} if self.parts else {}),
        }


def merged(parts: list[Fidelity], label: str = "overall") -> Fidelity:
    """All parts' positions as one: sums, every KL value, and in how many parts the greedy choices part
    (`first_split` stays None: a position means something only within one text)."""
    out = Fidelity(label, parts=sum(p.parts or 1 for p in parts))
    for p in parts:
        out.positions += p.positions
        out.agree += p.agree
        out.nll_a += p.nll_a
        out.nll_b += p.nll_b
        out.kl.extend(p.kl)
    out.parted = sum(p.parted if p.parts else p.first_split is not None for p in parts)
    out.note = "; ".join(f"{p.label}: {p.note}" for p in parts if p.note)
    return out


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities in float64."""
    x = logits.astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=1, keepdims=True))
    return x


def add_rows(stats: Fidelity, logits_a: np.ndarray, logits_b: np.ndarray, targets: np.ndarray) -> None:
    """Fold one aligned block of scored rows into `stats` (targets: the actual next ids)."""
    width = min(logits_a.shape[1], logits_b.shape[1])  # a padded embedding may be wider on one side
    la, lb = log_softmax(logits_a[:, :width]), log_softmax(logits_b[:, :width])
    pa = np.exp(la)
    kl = np.where(pa > 0, pa * (la - lb), 0.0).sum(axis=1)
    same = logits_a[:, :width].argmax(axis=1) == logits_b[:, :width].argmax(axis=1)
    if stats.first_split is None and not same.all():
        stats.first_split = stats.positions + int(np.argmin(same))
    rows = np.arange(len(targets))
    stats.nll_a -= float(la[rows, targets].sum())
    stats.nll_b -= float(lb[rows, targets].sum())
    stats.agree += int(same.sum())
    stats.positions += len(targets)
    stats.kl.extend(kl.tolist())


def scored_rows(blocks: Iterator, first: int) -> Iterator[np.ndarray]:
    """The rows from position `first` on of a `prompt_logits` stream, as they come."""
    for start, block in blocks:
        if start + len(block) > first:
            yield block[max(0, first - start):]


def paired(rows_a: Iterator[np.ndarray], rows_b: Iterator[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Two streams of row blocks of possibly different sizes as pairs of equally long blocks."""
    a = b = None
    while True:
        if a is None or not len(a):
            a = next(rows_a, None)
        if b is None or not len(b):
            b = next(rows_b, None)
        if a is None or b is None:
            return
        n = min(len(a), len(b))
        yield a[:n], b[:n]
        a, b = a[n:], b[n:]


@dataclass
class Reading:
    """One text as each model reads it: its own ids, the first scored position in them, and the
    answer ids both are scored on (every position from `first` predicts the next answer id)."""

    label: str
    ids_a: list[int]
    ids_b: list[int]
    first_a: int
    first_b: int
    note: str = ""


def context_limit(a, b) -> int | None:
    limits = [x for x in (a.context_length, b.context_length) if x]
    return min(limits) if limits else None


def cut_to_context(reading: Reading, limit: int | None, who: str) -> Reading:
    """Drop the tail a model's context cannot hold (the ids read are all but the last), with a note."""
    longest = max(len(reading.ids_a), len(reading.ids_b))
    if limit is None or longest - 1 <= limit:
        return reading
    cut = longest - 1 - limit
    reading.ids_a, reading.ids_b = reading.ids_a[: len(reading.ids_a) - cut], reading.ids_b[: len(reading.ids_b) - cut]
    reading.note = f"cut to {limit} tokens ({who}'s context): the last {cut} token(s) not scored"
    return reading


def score(a, b, reading: Reading, progress: Callable[[int, int], None] | None = None) -> Fidelity:
    """Teacher-force both models over one reading and compare them position by position."""
    stats = Fidelity(reading.label, note=reading.note)
    targets = np.asarray(reading.ids_a[reading.first_a + 1:], dtype=np.int64)
    if not len(targets):
        stats.note = (stats.note + "; " if stats.note else "") + "nothing to score: no answer token fits after the prompt"
        return stats
    rows = block_rows(1 << 17)  # the same block size on both sides, small enough for any vocabulary
    blocks_a = a.prompt_logits(reading.ids_a[:-1], rows=rows)
    blocks_b = None if a is b and reading.ids_a == reading.ids_b else b.prompt_logits(reading.ids_b[:-1], rows=rows)
    rows_a = scored_rows(blocks_a, reading.first_a)
    if blocks_b is None:  # one loaded model on both sides (the same name picked twice): its logits, read once
        pairs = ((part, part) for part in rows_a)
    else:
        pairs = paired(rows_a, scored_rows(blocks_b, reading.first_b))
    try:
        for part_a, part_b in pairs:
            add_rows(stats, part_a, part_b, targets[stats.positions : stats.positions + len(part_a)])
            if progress:
                progress(stats.positions, len(targets))
    finally:
        blocks_a.close()
        if blocks_b is not None:
            blocks_b.close()
    return stats


def check_same_tokenizer(a, b) -> None:
    """UserError unless A and B give the same ids for the probe text: then they share a vocabulary, and
    both can read the ids A's tokenizer makes of any text."""
    ids_a, ids_b = a.text_ids(PROBE_TEXT), b.text_ids(PROBE_TEXT)
    if ids_a != ids_b:
        at = next((i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y), min(len(ids_a), len(ids_b)))
        raise UserError(
            f"{a.label} and {b.label} do not share a tokenizer (their ids for the same text differ from token "
            f"{at} on); fidelity compares the two token by token, so pick two forms of one model "
            "(e.g. bfloat16 vs float32, or a model directory vs its gguf-* export)")


def reading_of_answer(a, b, label: str, messages: list[dict], answer: str) -> Reading:
    """A conversation in each model's own chat format followed by the same answer ids (A's tokenizer)."""
    prompt_a, prompt_b = a.prompt_ids(messages), b.prompt_ids(messages)
    answer_ids = a.text_ids(answer)
    return Reading(label, prompt_a + answer_ids, prompt_b + answer_ids, len(prompt_a) - 1, len(prompt_b) - 1)


def reading_of_text(a, label: str, text: str) -> Reading:
    """Plain text, no chat format: every position after the first token is scored."""
    ids = a.text_ids(text)
    if len(ids) < 2:
        raise UserError(f"{label} has {len(ids)} token(s); fidelity needs a text of at least two tokens")
    return Reading(label, ids, list(ids), 0, 0)


def score_all(a, b, readings: list[Reading], progress: Callable[[int, int, str], None] | None = None) -> list[Fidelity]:
    """Each reading scored, cut to the smaller context first; `progress(done, total, label)` per block."""
    limit = context_limit(a, b)
    who = a.label if a.context_length == limit else b.label
    out = []
    for n, reading in enumerate(readings):
        reading = cut_to_context(reading, limit, who)
        tick = (lambda done, total, n=n, r=reading: progress(n + done / total, len(readings), r.label)) if progress else None
        out.append(score(a, b, reading, tick))
    return out


def greedy_answer(backend, messages: list[dict], max_new_tokens: int) -> str:
    """The reference model's own greedy reply (no repetition penalty: its argmax at every step)."""
    params = GenerationParams(max_new_tokens=max_new_tokens, greedy=True, repetition_penalty=1.0)
    update = None
    for update in stream_reply(backend, messages, params):
        pass
    return update.text if update is not None else ""


def presets_fidelity(a, b, presets, max_new_tokens: int = 128, system: str | None = None,
                     progress: Callable[[float, int, str], None] | None = None) -> list[Fidelity]:
    """Each preset answered greedily by A, then both read prompt + that answer (each in its own chat format)."""
    check_same_tokenizer(a, b)  # before minutes of generation
    readings = []
    for n, preset in enumerate(presets):
        if progress:
            progress(n, len(presets), f"{preset.label} · A answers")
        messages = messages_for(preset.text, system)
        fits = not a.context_length or len(a.prompt_ids(messages)) < a.context_length
        answer = greedy_answer(a, messages, max_new_tokens) if fits else ""  # too long: cut below, with a note
        readings.append(reading_of_answer(a, b, preset.label, messages, answer))
    return score_all(a, b, readings, progress)


def text_fidelity(a, b, text: str, label: str = "text",
                  progress: Callable[[float, int, str], None] | None = None) -> list[Fidelity]:
    """Both models over a plain text (no chat format), all positions scored."""
    check_same_tokenizer(a, b)
    return score_all(a, b, [reading_of_text(a, label, text)], progress)


def answers_fidelity(a, b, answers: list[tuple[str, list[dict], str]],
                     progress: Callable[[float, int, str], None] | None = None) -> tuple[list[Fidelity], str]:
    """B against A over (label, messages, A's answer) triples, e.g. a report's; ([], why) when the two
    do not share a tokenizer (or one is remote), there is no answer, or Ctrl-C stopped it."""
    answers = [item for item in answers if item[2]]
    if not answers:
        return [], "A gave no answer to score"
    try:
        check_same_tokenizer(a, b)
        return score_all(a, b, [reading_of_answer(a, b, *item) for item in answers], progress), ""
    except UserError as e:
        return [], str(e)
    except KeyboardInterrupt:
        return [], "interrupted (Ctrl-C)"
