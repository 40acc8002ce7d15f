"""A judge model votes on stored battles: both answer orders, one fixed prompt, a parsed verdict.

arena-hard-auto's recipe for when nobody votes on 200 prompts: the judge sees the question and the
two answers, once as stored and once swapped (position bias cancels out), and ends with [[A]],
[[B]] or [[C]] (a tie). Orders that disagree count as a tie. The prompt is Chinese when the question
is. A verdict is stored as a vote of voter "judge:<name>" (store.record_judge_vote), never mixed
into the human board unless picked. A failed or unreadable judgement is an error line for that
battle and the run goes on; judged battles are skipped, so a stopped run resumes where it ended.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol

from llm_compare.arena import detect_language
from llm_compare.errors import UserError
from llm_compare.params import GenerationParams

VERDICTS = ("A", "B", "C")
ANSWER_CHARS = 6000  # each answer is cut to this many characters: a small judge's context is short
PROMPTS = {
    "English": (
        "You are an impartial judge of two AI assistants' answers to the same user question. Judge which "
        "answer is more correct, helpful and relevant. The order of the answers, their length and any "
        "formatting must not sway you. Reply with your verdict first: [[A]] if assistant A's answer is "
        "better, [[B]] if assistant B's answer is better, [[C]] if they are equally good; then at most "
        "one short sentence of reason.",
        "[Question]\n{question}\n\n[Answer of assistant A]\n{first}\n[End of answer A]\n\n"
        "[Answer of assistant B]\n{second}\n[End of answer B]",
    ),
    "Chinese": (
        "你是一名公正的评审，要比较两个 AI 助手对同一个用户问题的回答。判断哪个回答更正确、更有帮助、更切题。"
        "回答的先后顺序、长短和排版都不应影响你的判断。请先给出结论：助手 A 的回答更好写 [[A]]，"
        "助手 B 的回答更好写 [[B]]，两者一样好写 [[C]]；之后最多用一句话说明理由。",
        "[问题]\n{question}\n\n[助手 A 的回答]\n{first}\n[回答 A 结束]\n\n"
        "[助手 B 的回答]\n{second}\n[回答 B 结束]",
    ),
}
_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")


def judge_messages(question: str, first: str, second: str) -> list[dict]:
    """The fixed judge prompt for one order of the answers (Chinese when the question is)."""
    system, user = PROMPTS["Chinese" if detect_language(question) == "Chinese" else "English"]
    cut = lambda text: text if len(text) <= ANSWER_CHARS else text[:ANSWER_CHARS] + " […]"
    return [{"role": "system", "content": system},
            {"role": "user", "content": user.format(question=question, first=cut(first), second=cut(second))}]


def parse_verdict(text: str) -> str | None:
    """"A", "B" or "C" when the reply names exactly one verdict, else None (a refusal, garbage)."""
    found = set(_VERDICT.findall(text or ""))
    return found.pop() if len(found) == 1 else None


def combine(as_stored: str, swapped: str) -> str:
    """A store outcome ("a", "b", "tie") from the verdicts of both orders; disagreement is a tie."""
    first = {"A": "a", "B": "b", "C": "tie"}[as_stored]
    second = {"A": "b", "B": "a", "C": "tie"}[swapped]  # swapped: the judge's A was the battle's B
    return first if first == second else "tie"


class Judge(Protocol):
    name: str

    def verdict(self, messages: list[dict]) -> tuple[str | None, dict]:
        """(verdict letter or None, what it was read from: the reply text or the probabilities)."""


@dataclass
class TextJudge:
    """A judge that answers in text (any backend; the one way for a server): the verdict is parsed."""

    backend: object
    name: str
    max_new_tokens: int = 256

    def verdict(self, messages: list[dict]) -> tuple[str | None, dict]:
        params = GenerationParams(max_new_tokens=self.max_new_tokens, greedy=True)
        text = "".join(chunk.text for chunk in self.backend.stream(messages, params, threading.Event()))
        return parse_verdict(text), {"reply": text[:500]}


def question_and_answers(battle) -> tuple[str, str, str]:
    """The last user turn and each side's last answer."""
    users = [m.get("content") or "" for m in battle.conversation_a if m.get("role") == "user"]
    return (users[-1] if users else battle.prompt), battle.answer_a, battle.answer_b


def judge_battle(judge: Judge, battle) -> tuple[str, dict]:
    """(outcome, detail) for one battle judged in both orders; UserError when a verdict is unreadable."""
    question, answer_a, answer_b = question_and_answers(battle)
    letters, detail = [], {}
    for order, (first, second) in (("as_stored", (answer_a, answer_b)), ("swapped", (answer_b, answer_a))):
        letter, seen = judge.verdict(judge_messages(question, first, second))
        detail[order] = {"verdict": letter, **seen}
        if letter not in VERDICTS:
            shown = repr(seen.get("reply", seen))[:80]
            raise UserError(f"the judge gave no verdict ([[A]], [[B]] or [[C]]) with the answers {order.replace('_', ' ')}: "
                            f"{shown}")
        letters.append(letter)
    return combine(*letters), detail


@dataclass
class JudgeRun:
    judged: list[tuple[int, str]] = field(default_factory=list)  # (battle id, outcome)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (battle id, message)
    skipped: int = 0  # battles this judge had already judged
    planned: int = 0
    interrupted: bool = False


def pick_battles(store, judge_name: str, which: str = "unvoted", limit: int | None = None) -> tuple[list, int]:
    """(battles to judge now, how many were skipped as judged before): without a human vote, or all."""
    if which not in ("unvoted", "all"):
        raise UserError(f"--battles must be unvoted or all, not {which!r}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be a positive number of battles (got {limit})")
    battles = store.battles(voted=False if which == "unvoted" else None)
    done = store.judged_ids(judge_name)
    todo = [b for b in battles if b.id not in done]
    return todo[:limit] if limit else todo, len(battles) - len(todo)


def run_judge(store, judge: Judge, battles: list, *, skipped: int = 0,
              progress: Callable[[int, int, object, str], None] | None = None,
              stop: threading.Event | None = None) -> JudgeRun:
    """Judge `battles` in order, storing each verdict as it comes; Ctrl-C or `stop` ends the run cleanly."""
    run = JudgeRun(skipped=skipped, planned=len(battles))
    try:
        for n, battle in enumerate(battles, 1):
            if stop is not None and stop.is_set():
                run.interrupted = True
                break
            try:
                outcome, detail = judge_battle(judge, battle)
                store.record_judge_vote(battle.id, outcome, judge.name, detail)
                run.judged.append((battle.id, outcome))
                line = f"battle {battle.id}: {outcome}"
            except (UserError, RuntimeError, OSError) as e:  # this battle failed, not the run
                run.errors.append((battle.id, str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"))
                line = f"battle {battle.id}: error: {e}"
            if progress:
                progress(n, len(battles), battle, line)
    except KeyboardInterrupt:  # the verdicts stored so far stay; a new run skips them
        run.interrupted = True
    return run
