"""Countdown as a `steiner.domain.Domain`: what the seam asks, answered with the solver, the checker and
the step text functions of `steiner.countdown.steps` (the only place that knows how steps are worded).

A state key is the sorted remaining numbers (``"5,8,11"``); the starting state is the question's
numbers. A step is checked by the move it names (`parse_op`): both operands must be available in the
state it starts from, the result must be right under Countdown rules, and a state the step claims
(`step_key`) must be the one the move leaves.
"""

from __future__ import annotations

import random
import re
from typing import Any

from steiner.countdown.checker import check_answer
from steiner.countdown.problems import parse_question
from steiner.countdown.solver import apply_op, remove_pair, solvable, state_key, state_of
from steiner.countdown.steps import answer_from_steps, dead_end_reflection, parse_op, parse_state, step_key
from steiner.domain import Domain, Grade, StepCheck
from steiner.format import Step
from steiner.grading import extract_expression


class CountdownDomain(Domain):
    """Countdown questions: ``numbers`` and ``target`` fields, or a question written by `question_text`."""

    name = "countdown"
    answer_type = "countdown"
    checks_steps = True

    def problem(self, record: dict[str, Any]) -> tuple[list[int], int] | None:
        if record.get("numbers") is not None and record.get("target") is not None:
            return [int(x) for x in record["numbers"]], int(record["target"])
        return parse_question(str(record.get("question", "")))

    def _problem(self, record: dict[str, Any]) -> tuple[list[int], int]:
        prob = self.problem(record)
        if prob is None:
            raise ValueError(f"question {record.get('id')!r} is not a Countdown question (no numbers/target)")
        return prob

    def step_key(self, step: Step) -> str | None:
        return step_key(step)

    def check_step(self, record: dict[str, Any], before: str | None, step: Step) -> StepCheck:
        numbers, _ = self._problem(record)
        state = parse_state(before) if before else state_of(numbers)
        if state is None:
            return StepCheck(False, f"unknown starting state {before!r}")
        op = parse_op(step)
        if op is None:
            return StepCheck(False, "the step names no move")
        a, o, b, c = op
        rest = remove_pair(state, a, b)
        if rest is None:
            have = ", ".join(map(str, state))
            return StepCheck(False, f"uses {a} and {b}, but the numbers left are {have}")
        value = apply_op(a, o, b)
        if value is None:
            return StepCheck(False, f"{a} {o} {b} is not allowed (negative or not a whole number)")
        if value != c:
            return StepCheck(False, f"{a} {o} {b} is {value}, not {c}")
        after = state_key([*rest, c])
        claimed = step_key(step)
        if claimed is not None and claimed != after:
            return StepCheck(False, f"claims the numbers left are {claimed}, but the move leaves {after}", after)
        return StepCheck(True, "ok", after)

    def grade(self, record: dict[str, Any], answer: str) -> Grade:
        expr = extract_expression(answer)
        if expr is None:
            return Grade(False, None, "no expression found")
        prob = self.problem(record)
        if prob is None:
            return Grade(False, expr, "the question has no numbers/target")
        res = check_answer(expr, prob[0], prob[1])
        return Grade(bool(res.ok), re.sub(r"\s+", "", expr), "correct" if res.ok else res.reason)

    def answer_from_steps(self, record: dict[str, Any], steps: list[Step]) -> str | None:
        return answer_from_steps(self._problem(record)[0], steps)

    def dead_end_reflection(self, record: dict[str, Any], step: Step, rng: random.Random) -> str | None:
        state = parse_state(step_key(step))
        return dead_end_reflection(state, self._problem(record)[1], rng) if state else None

    def dead_state(self, record: dict[str, Any], step: Step) -> bool | None:
        state = parse_state(step_key(step))
        return None if state is None else not solvable(state, self._problem(record)[1])

    def teacher(self, **options: Any) -> Any:
        from steiner.countdown.teacher import BuiltinCountdownTeacher

        return BuiltinCountdownTeacher(**options)
