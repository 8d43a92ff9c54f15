"""The built-in offline teacher for Countdown: exact references, fallible forward attempts, honest reveals."""

from __future__ import annotations

import math
import random

from steiner.countdown.problems import parse_question
from steiner.countdown.solver import (
    Op,
    State,
    expression,
    moves,
    shortest_solution,
    solvable,
    solve,
    state_of,
)
from steiner.countdown.steps import (
    after,
    dead_end_reflection,
    on_track_reflection,
    op_step,
    ops_steps,
    parse_state,
    step_key,
    steps_ops,
)
from steiner.domain.teacher import Question, Revealed
from steiner.format import Step


def problem_of(q: Question) -> tuple[list[int], int]:
    """(numbers, target) of a Countdown question, from ``q.meta`` or else the question text."""
    if "numbers" in q.meta and "target" in q.meta:
        return [int(x) for x in q.meta["numbers"]], int(q.meta["target"])
    parsed = parse_question(q.question)
    if parsed is None:
        raise ValueError(f"question {q.id!r} is not a Countdown question (no numbers/target in meta or text)")
    return parsed


class BuiltinCountdownTeacher:
    """A teacher that needs no model: the solver writes references and reveals, a policy writes attempts.

    ``forward_policy="heuristic"`` prefers moves that bring a number close to the target (a softmax
    over closeness, with ``error_rate`` chance of a uniformly random move), so it often succeeds and
    sometimes walks into a dead end, as a real LLM does; ``"random"`` picks moves uniformly.
    """

    def __init__(self, seed: int = 0, forward_policy: str = "heuristic", error_rate: float = 0.3,
                 temperature: float = 0.15) -> None:
        if forward_policy not in ("heuristic", "random"):
            raise ValueError(f"forward_policy must be 'heuristic' or 'random', got {forward_policy!r}")
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {error_rate!r}")
        self.seed = seed
        self.forward_policy = forward_policy
        self.error_rate = error_rate
        self.temperature = temperature
        self.name = f"builtin-countdown-{forward_policy}"

    def _rng(self, q: Question, *parts: object) -> random.Random:
        return random.Random(":".join(str(p) for p in (self.seed, q.id, *parts)))

    @staticmethod
    def _state_after(numbers: list[int], steps: list[Step]) -> State:
        state = state_of(numbers)
        if steps:
            parsed = parse_state(step_key(steps[-1]))
            if parsed is None:
                raise ValueError(f"step {steps[-1].name!r} names no remaining numbers")
            state = parsed
        return state

    async def reference(self, q: Question) -> tuple[list[Step], str]:
        numbers, target = problem_of(q)
        sol = shortest_solution(numbers, target)
        if sol is None:
            raise ValueError(f"question {q.id!r}: {numbers} cannot make {target}")
        return ops_steps(numbers, sol, target, self._rng(q, "reference")), expression(numbers, sol) or ""

    def _pick(self, state: State, target: int, rng: random.Random) -> Op:
        options = moves(state)
        if self.forward_policy == "random" or rng.random() < self.error_rate:
            return rng.choice(options)[0]
        # closeness of the best number after the move, relative to the target's size
        scale = max(1.0, self.temperature * max(target, 1))
        weights = [math.exp(-min(abs(x - target) for x in child) / scale) for _, child in options]
        return rng.choices(options, weights=weights)[0][0]

    async def forward(self, q: Question, prefix: list[Step], n_steps: int, seed: int) -> list[Step]:
        numbers, target = problem_of(q)
        rng = self._rng(q, "forward", len(prefix), seed)
        state = self._state_after(numbers, prefix)
        out: list[Step] = []
        while len(out) < n_steps and len(state) > 1:
            op = self._pick(state, target, rng)
            new = after(state, op)
            done = new is not None and len(new) == 1 and new[0] == target
            out.append(op_step(state, op, target, rng, "end" if done else "proceed"))
            state = new  # type: ignore[assignment]
        return out

    async def reveal(self, q: Question, prefix: list[Step], attempt: list[Step], seed: int) -> Revealed:
        numbers, target = problem_of(q)
        rng = self._rng(q, "reveal", len(prefix), seed)
        line = prefix + attempt
        states = [state_of(numbers)] + [self._state_after(numbers, line[: i + 1]) for i in range(len(line))]
        # the deepest state on the line that can still make the target (states only shrink, so
        # the solvable ones form a prefix of the line)
        deepest = max(i for i, s in enumerate(states) if solvable(s, target))
        last = states[-1]
        if deepest == len(line):
            returns_to = None
            reflection = on_track_reflection(last, target, rng)
        else:
            returns_to = deepest
            reflection = dead_end_reflection(last, target, rng)
        resume = states[deepest]
        sols = solve(resume, target)
        cont_ops = rng.choice(sols) if sols else []
        cont = ops_steps(numbers, cont_ops, target, rng, start=resume) if cont_ops else []
        active_ops = steps_ops(line[:deepest])
        if active_ops is None:
            raise ValueError(f"question {q.id!r}: a step of the line names no move")
        final = expression(numbers, active_ops + list(cont_ops)) or q.answer
        return Revealed(reflection=reflection, returns_to=returns_to, steps=cont, final_answer=final)
