"""What method two needs to know about a question's domain: an exact step key, how to say why a
state is a dead end, how to read the final answer off active steps, and how to check an answer.

Countdown questions (numbers and target in the record, or a question written by
`steiner.countdown.question_text`) get all four; any other question gets none, so its steps are
clustered by embeddings and its final answers come from the teacher.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from steiner.format import Step


@dataclass
class Domain:
    """Hooks for one question (all optional; None means "not known in this domain")."""

    name: str
    key_fn: Callable[[Step], str | None] | None = None
    reflect_fn: Callable | None = None
    answer_fn: Callable | None = None
    answer_ok: Callable[[str], bool] | None = None


def countdown_problem(rec: dict) -> tuple[list[int], int] | None:
    """(numbers, target) of a question record if it is a Countdown question."""
    from steiner.countdown import parse_question

    if "numbers" in rec and "target" in rec:
        return [int(x) for x in rec["numbers"]], int(rec["target"])
    return parse_question(str(rec.get("question", "")))


def domain_for(rec: dict, seed: int = 0) -> Domain:
    """The domain hooks for a question record."""
    problem = countdown_problem(rec)
    if problem is None:
        return Domain("text")
    from steiner.countdown import answer_from_steps, check_answer, dead_end_reflection, parse_state, step_key

    numbers, target = problem
    rng = random.Random(f"domain:{seed}:{rec.get('id', rec.get('question_id'))}")

    def reflect(step: Step, node: str, dag: object) -> str | None:
        state = parse_state(step_key(step))
        return dead_end_reflection(state, target, rng) if state else None

    return Domain(
        "countdown",
        key_fn=step_key,
        reflect_fn=reflect,
        answer_fn=lambda steps, dag: answer_from_steps(numbers, steps),
        answer_ok=lambda ans: check_answer(ans, numbers, target).ok,
    )
