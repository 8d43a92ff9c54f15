"""The built-in offline teacher for Countdown: search references, fallible forward attempts, honest reveals.

The reference path is the search trace (`search_path`): moves tried in a fixed order, every dead end
shown failing by its own checks, ending at the first hit. A forward attempt (answer hidden) tries
moves the trace has not tried yet from where it stands, by a heuristic or at random; each step writes
its checks, so whether it missed is visible in the step itself. The reveal (answer known) may choose
where to return to, but its reflection only states what the attempt shows ("No result is 39.").
"""

from __future__ import annotations

import math
import random

from steiner.countdown.problems import parse_question
from steiner.countdown.solver import Op, State, expression, solvable, solve, state_of
from steiner.countdown.steps import (
    dead_end_reflection,
    on_track_reflection,
    op_step,
    ops_steps,
    ordered_moves,
    parse_op,
    parse_state,
    remaining_order,
    search_path,
    step_hit,
    step_key,
    steps_ops,
)
from steiner.domain.teacher import Question, Revealed
from steiner.format import ReasoningPath, Step


def problem_of(q: Question) -> tuple[list[int], int]:
    """(numbers, target) of a Countdown question, from ``q.meta`` or else the question text."""
    if "numbers" in q.meta and "target" in q.meta:
        return [int(x) for x in q.meta["numbers"]], int(q.meta["target"])
    parsed = parse_question(q.question)
    if parsed is None:
        raise ValueError(f"question {q.id!r} is not a Countdown question (no numbers/target in meta or text)")
    return parsed


def _line(numbers: list[int], steps: list[Step]) -> tuple[list[int], list[tuple[int, Step]]]:
    """The active line of ``steps`` (abandoned branches removed) with emitted indices, and the numbers
    left after it in written order."""
    path = ReasoningPath(list(steps))
    active = path.active_steps()
    ids = {id(s) for s in active}
    line = [(i + 1, s) for i, s in enumerate(steps) if id(s) in ids]
    order = list(numbers)
    if line:
        order = remaining_order(line[-1][1]) or list(parse_state(step_key(line[-1][1])) or ())
    return order, line


class BuiltinCountdownTeacher:
    """A teacher that needs no model: the search writes references, a policy writes attempts.

    ``forward_policy="heuristic"`` prefers moves that bring a number close to the target (a softmax
    over closeness, with ``error_rate`` chance of a uniformly random move), so it often succeeds and
    sometimes walks into a dead end, as a real LLM does; ``"random"`` picks moves uniformly. Either way
    an attempt only tries moves the trace has not tried from the same numbers.
    """

    def __init__(self, seed: int = 0, forward_policy: str = "heuristic", error_rate: float = 0.3,
                 temperature: float = 0.15, past_answer_prob: float = 0.0) -> None:
        if forward_policy not in ("heuristic", "random"):
            raise ValueError(f"forward_policy must be 'heuristic' or 'random', got {forward_policy!r}")
        for name, value in (("error_rate", error_rate), ("past_answer_prob", past_answer_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        self.past_answer_prob = past_answer_prob
        self.seed = seed
        self.forward_policy = forward_policy
        self.error_rate = error_rate
        self.temperature = temperature
        self.name = f"builtin-countdown-{forward_policy}"

    def _rng(self, q: Question, *parts: object) -> random.Random:
        return random.Random(":".join(str(p) for p in (self.seed, q.id, *parts)))

    async def reference(self, q: Question) -> tuple[list[Step], str]:
        numbers, target = problem_of(q)
        found = search_path(numbers, target, self._rng(q, "reference"), self.past_answer_prob)
        if found is None:
            raise ValueError(f"question {q.id!r}: {numbers} cannot make {target}")
        return found

    def _pick(self, options: list[tuple[Op, list[int]]], target: int, rng: random.Random) -> tuple[Op, list[int]]:
        if self.forward_policy == "random" or rng.random() < self.error_rate:
            return rng.choice(options)
        # closeness of the best number after the move, relative to the target's size
        scale = max(1.0, self.temperature * max(target, 1))
        weights = [math.exp(-min(abs(x - target) for x in left) / scale) for _, left in options]
        return rng.choices(options, weights=weights)[0]

    async def forward(self, q: Question, prefix: list[Step], n_steps: int, seed: int) -> list[Step]:
        numbers, target = problem_of(q)
        rng = self._rng(q, "forward", len(prefix), seed)
        order, line = _line(numbers, prefix)
        here = line[-1][0] if line else 0
        # moves already tried from this point of the trace (steps that continued from it); a hit the
        # trace went on past (``past_answer_prob``) stays open: coming back to it is how such a search ends
        tried = {parse_op(s) for s in _children(prefix, here) if step_hit(s) is None}
        out: list[Step] = []
        while len(out) < n_steps and len(order) > 1:
            options = [(op, left) for op, left in ordered_moves(order) if op not in tried]
            if not options:
                break
            op, left = self._pick(options, target, rng)
            step = op_step(order, op, target, order=order)
            done = step_hit(step) is not None or (len(left) == 1 and left[0] == target)
            step.decision = "end" if done else "proceed"
            out.append(step)
            if len(left) <= 2:
                break  # the step wrote out every result of the last two numbers
            order, tried = remaining_order(step) or left, set()
        return out

    async def reveal(self, q: Question, prefix: list[Step], attempt: list[Step], seed: int) -> Revealed:
        numbers, target = problem_of(q)
        steps = list(prefix) + list(attempt)
        _, line = _line(numbers, steps)
        if not line:
            raise ValueError(f"question {q.id!r}: nothing to reveal (the attempt is empty and no line is open)")
        states: list[State] = [state_of(numbers)] + [parse_state(step_key(s)) or () for _, s in line]
        last = line[-1][1]
        if step_hit(last) is not None or (len(states[-1]) == 1 and states[-1][0] == target):
            active_ops = steps_ops([s for _, s in line]) or []
            hit = step_hit(last)
            final = expression(numbers, active_ops + ([hit] if hit else [])) or q.answer
            return Revealed(reflection=last.reflection or on_track_reflection(states[-1], target),
                            returns_to=None, steps=[], final_answer=final)
        # the deepest point of the line that can still make the target (the answer decides where to go
        # back to; the reflection says only what the attempt shows)
        deepest = max(i for i, s in enumerate(states) if solvable(s, target))
        if deepest == len(line) and len(states[-1]) > 2:
            return Revealed(reflection=on_track_reflection(states[-1], target), returns_to=None,
                            steps=await self._continue(q, steps, line, deepest), final_answer=q.answer)
        returns_to = line[deepest - 1][0] if deepest > 0 else 0
        reflection = dead_end_reflection(states[-1], target) or last.reflection
        cont = await self._continue(q, steps, line, deepest)
        active = [s for _, s in line[:deepest]] + cont
        ops = steps_ops(active) or []
        hit = step_hit(cont[-1]) if cont else None
        final = expression(numbers, ops + ([hit] if hit else [])) or q.answer
        return Revealed(reflection=reflection, returns_to=returns_to, steps=cont, final_answer=final)

    async def _continue(self, q: Question, steps: list[Step], line: list[tuple[int, Step]], depth: int) -> list[Step]:
        """A solution from the line's ``depth``-th state, as compact steps ending at the hit."""
        numbers, target = problem_of(q)
        order = list(numbers) if depth == 0 else (remaining_order(line[depth - 1][1]) or [])
        sols = solve(order, target)
        if not sols:
            return []
        sol = self._rng(q, "reveal", len(steps)).choice(sols)
        # a move that leaves two numbers already writes the last move in its checks
        moves = sol[:-1] if len(sol) >= 2 else sol
        return ops_steps(numbers, moves, target, start=order)


def _children(steps: list[Step], here: int) -> list[Step]:
    """Steps of ``steps`` that continued from emitted step ``here`` (0: the question)."""
    out = []
    parent = 0
    stack = [0]
    for i, s in enumerate(steps, start=1):
        parent = stack[-1]
        if parent == here:
            out.append(s)
        if s.decision == "backtrack" and s.returns_to is not None:
            stack = [j for j in stack if j <= s.returns_to]
        else:
            stack.append(i)
    return out
