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
from steiner.countdown.steps import (
    answer_from_steps,
    dead_end_reflection,
    final_checks,
    ordered_moves,
    parse_checks,
    parse_op,
    parse_state,
    remaining_order,
    step_fails,
    step_key,
)
from steiner.domain import Domain, Grade, StepCheck
from steiner.format import Step
from steiner.grading import extract_expression

_REACHES_RE = re.compile(r"reaches (\d+)")
_ANSWER_RE = re.compile(r"reaches \d+: (.+?)\.?\s*$")  # "12*3=36 reaches 36: 12 * (2 + 1)."


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
        bad = self._check_results(record, [*rest, c], step) or self._check_claimed_answer(record, list(state), step)
        if bad:
            return StepCheck(False, bad, after)
        return StepCheck(True, "ok", after)

    def _check_results(self, record: dict[str, Any], left: list[int], step: Step) -> str | None:
        """What is wrong with the results a step wrote out for its last two numbers (None: nothing):
        each must use those two numbers, be computed right, be compared with the real target and
        judged right, in the order + - * / up to the first hit, and all of them be there unless one hits;
        a reflection that says a number is reached must name the target and a hit the results show (the
        demo's RL at learning rate 2e-4 learned to stop on "7+4=11 reaches 11." after "7+4=11 (36? no)")."""
        checks = parse_checks(step)
        target = self._problem(record)[1]
        claim = _REACHES_RE.search(step.reflection or "")
        if not checks:
            return f"claims to reach {claim.group(1)} with no result written out" if claim else None
        if len(left) == 1:  # the last move: its own result is compared with the target
            (_, t, yes), c = checks[0], left[0]
            if len(checks) != 1 or t != target or yes != (c == target):
                return f"compares {c} with the target {target} wrongly"
            if claim and (int(claim.group(1)) != target or c != target):
                return f"claims to reach {claim.group(1)}, but {c} is {'not ' if c != target else ''}{target}"
            return None
        if len(left) != 2:
            return "writes out final results, but more than two numbers are left"
        expected = final_checks(left[0], left[1], target)
        for i, ((a, o, b, c), t, yes) in enumerate(checks):
            if t != target:
                return f"compares with {t}, but the target is {target}"
            if i >= len(expected) or expected[i][0][:3] != (a, o, b):
                return f"{a} {o} {b} is not the next result of {max(left)} and {min(left)} to try"
            value = apply_op(a, o, b)
            if value != c:
                return f"{a} {o} {b} is {value}, not {c}"
            if yes != (c == target):
                return f"says {c} {'is' if yes else 'is not'} {target}"
        hit = any(yes for _, _, yes in checks)
        if not hit and len(checks) < len(expected):
            return f"writes {len(checks)} of the {len(expected)} results of {max(left)} and {min(left)}"
        if claim and (int(claim.group(1)) != target or not hit):
            return f"claims to reach {claim.group(1)}, but its results {'do not reach' if not hit else 'reach'} {target}"
        return None

    def _check_claimed_answer(self, record: dict[str, Any], start: list[int], step: Step) -> str | None:
        """What is wrong with the answer a hit's reflection writes ("... reaches 36: 12 * (2 + 1).";
        None: nothing, or no answer written): it must use the numbers the step starts from (the
        question's, on a first step) exactly once each and make the target.
        A model that writes an intermediate as a number ("(5 * 2) + 10" for 12 + 5 * 2) had every
        move right and this claim wrong (docs/demo.md, session 34)."""
        m = _ANSWER_RE.search(step.reflection or "")
        if m is None:
            return None
        target = self._problem(record)[1]
        res = check_answer(m.group(1), start, target)
        return None if res.ok else f"writes the answer {m.group(1)}, which {res.reason}"

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
        target = self._problem(record)[1]
        state = parse_state(step_key(step))
        if state is None or not step_fails(step, target):
            return None  # the step does not show its line failing (e.g. three numbers are left)
        return dead_end_reflection(state, target)

    def move_order(self, record: dict[str, Any], parent: Step | None, step: Step) -> int | None:
        order = self._problem(record)[0] if parent is None else remaining_order(parent)
        op = parse_op(step)
        if not order or op is None:
            return None
        return next((i for i, (o, _) in enumerate(ordered_moves(list(order))) if o == op), None)

    def dead_state(self, record: dict[str, Any], step: Step) -> bool | None:
        state = parse_state(step_key(step))
        return None if state is None else not solvable(state, self._problem(record)[1])

    def teacher(self, **options: Any) -> Any:
        from steiner.countdown.teacher import BuiltinCountdownTeacher

        return BuiltinCountdownTeacher(**options)
