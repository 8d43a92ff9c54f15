"""Countdown steps as text: the path writer, `step_key` and reading moves back out of step text.

Every step's summary ends with ``remaining: 5, 8, 11`` so the state survives any phrasing and can be
read back from generated text (`step_key`); the move ``a op b = c`` is in the summary too
(`parse_op`). Each field has several phrasings chosen by a seeded rng, so that steps of the same
state read differently and clustering by embedding has real work to do.
"""

from __future__ import annotations

import random
import re

from steiner.countdown.solver import Op, State, apply_op, expression, remove_pair, state_key, state_of
from steiner.format import Step

NAMES = ["{a} {o} {b}", "Try {a} {o} {b}", "Combine {a} and {b}", "Compute {a} {o} {b}", "Use {a} {o} {b}"]
THOUGHTS = [
    "I take {a} and {b}: {a} {o} {b} = {c}. That leaves {rest}, and I still need {t}.",
    "{a} {o} {b} = {c}. Now the numbers are {rest}; the target is {t}.",
    "Combining {a} {o} {b} gives {c}, so I have {rest} to reach {t}.",
    "Let me compute {a} {o} {b} = {c}. Numbers left: {rest}. Goal: {t}.",
]
THOUGHTS_LAST = [
    "{a} {o} {b} = {c}, and every number is used; the target is {t}.",
    "Last move: {a} {o} {b} = {c}. The target was {t}.",
    "Finally {a} {o} {b} = {c}; no numbers are left. Need {t}.",
]
SUMMARIES = [
    "{a} {o} {b} = {c}; remaining: {rest}",
    "Computed {a} {o} {b} = {c}, remaining: {rest}",
    "Step done: {a} {o} {b} = {c}. remaining: {rest}",
    "{a} {o} {b} = {c} leaves remaining: {rest}",
]
# reflections that look only at the state, never at the answer (forward attempts and references)
REFLECT_OPEN = [
    "Still need {t} from {rest}.",
    "Next, work {rest} toward {t}.",
    "{c} is {d} away from {t}; {k} numbers to go.",
    "Keep going: {rest} must make {t}.",
]
REFLECT_DONE = ["That makes {t}.", "{t} reached, all numbers used.", "This hits the target {t}."]
REFLECT_MISS = ["This ends at {c}, not {t}.", "{c} is not {t}; this line fails.", "I end with {c} instead of {t}."]
# reflections written with the answer known, on the step where a line is abandoned
REFLECT_DEAD2 = [
    "This leaves {x} and {y}, which cannot make {t}.",
    "{x} and {y} cannot make {t}; this line fails.",
    "No way to get {t} from {x} and {y}; go back.",
]
REFLECT_DEADN = [
    "{rest} cannot make {t}; this is a dead end.",
    "From {rest} there is no way to {t}; go back.",
    "This leaves {rest}, which cannot reach {t}.",
]
REFLECT_ON_TRACK = [
    "Good: {rest} can still make {t}.",
    "This keeps {t} within reach.",
    "{rest} can still reach {t}; continue.",
]

_REMAINING_RE = re.compile(r"remaining(?:\s+numbers)?\s*[:=]\s*(\d+(?:\s*(?:,|and)\s*\d+)*)", re.I)
_OP_RE = re.compile(r"(\d+)\s*([+\-*/×÷])\s*(\d+)\s*=\s*(\d+)")


def _fmt(state: State) -> str:
    return ", ".join(str(x) for x in state)


def step_key(step: Step) -> str | None:
    """The canonical state after ``step``: its remaining numbers sorted, e.g. ``"5,8,11"``.

    Read from the summary (the last ``remaining: ...``), else the thought, else ``meta["key"]``;
    None when the step names no state.
    """
    for text in (step.summary, step.thought):
        found = _REMAINING_RE.findall(text or "")
        if found:
            return state_key(int(x) for x in re.findall(r"\d+", found[-1]))
    key = (step.meta or {}).get("key")
    return str(key) if key else None


def parse_state(key: str | None) -> State | None:
    """The state tuple of a key from `step_key`."""
    if not key:
        return None
    return state_of(int(x) for x in key.split(","))


def parse_op(step: Step) -> Op | None:
    """The move ``(a, op, b, c)`` a step made (from its summary, else thought), with ``a >= b``."""
    for text in (step.summary, step.thought):
        m = _OP_RE.search(text or "")
        if m:
            a, op, b, c = int(m.group(1)), {"×": "*", "÷": "/"}.get(m.group(2), m.group(2)), int(m.group(3)), int(m.group(4))
            if op in "+*" and a < b:
                a, b = b, a
            return (a, op, b, c)
    return None


def after(state: State, op: Op) -> State | None:
    """The state after applying ``op`` to ``state``; None if the move is not legal there."""
    a, o, b, c = op
    rest = remove_pair(state, a, b)
    if rest is None or apply_op(a, o, b) != c:
        return None
    return state_of([*rest, c])


def op_step(state: State, op: Op, target: int, rng: random.Random, decision: str | None = "proceed") -> Step:
    """Write one move as a step (name, thought, summary with the state, a state-only reflection)."""
    a, o, b, c = op
    new = after(state, op)
    if new is None:
        raise ValueError(f"move {a} {o} {b} = {c} is not legal from {state}")
    v = {"a": a, "o": o, "b": b, "c": c, "t": target, "rest": _fmt(new), "d": abs(c - target), "k": len(new)}
    if len(new) == 1:
        reflection = rng.choice(REFLECT_DONE if c == target else REFLECT_MISS)
    else:
        reflection = rng.choice(REFLECT_OPEN)
    return Step(
        name=rng.choice(NAMES).format(**v),
        thought=rng.choice(THOUGHTS_LAST if len(new) == 1 else THOUGHTS).format(**v),
        summary=rng.choice(SUMMARIES).format(**v),
        reflection=reflection.format(**v),
        decision=decision,  # type: ignore[arg-type]
        meta={"key": state_key(new)},
    )


def ops_steps(numbers: list[int], ops: list[Op], target: int, rng: random.Random, *, end: bool = True,
              start: State | None = None) -> list[Step]:
    """Steps for a sequence of moves from ``start`` (default: the question's numbers)."""
    state = start if start is not None else state_of(numbers)
    steps = []
    for i, op in enumerate(ops):
        last = i == len(ops) - 1
        steps.append(op_step(state, op, target, rng, "end" if (last and end) else "proceed"))
        state = after(state, op)  # type: ignore[assignment]
    return steps


def dead_end_reflection(state: State, target: int, rng: random.Random) -> str:
    """Why a state is a dead end, said with the answer known ("this leaves 3 and 50, which ...")."""
    if len(state) == 1:
        return rng.choice(REFLECT_MISS).format(c=state[0], t=target)
    if len(state) == 2:
        return rng.choice(REFLECT_DEAD2).format(x=state[0], y=state[1], t=target)
    return rng.choice(REFLECT_DEADN).format(rest=_fmt(state), t=target)


def on_track_reflection(state: State, target: int, rng: random.Random) -> str:
    """A reflection for a state that can still make the target, said with the answer known."""
    if len(state) == 1:
        return rng.choice(REFLECT_DONE).format(t=target)
    return rng.choice(REFLECT_ON_TRACK).format(rest=_fmt(state), t=target)


def steps_ops(steps: list[Step]) -> list[Op] | None:
    """The moves of ``steps`` in order; None if one of them names no move."""
    ops = [parse_op(s) for s in steps]
    return None if any(op is None for op in ops) else ops  # type: ignore[return-value]


def answer_from_steps(numbers: list[int], steps: list[Step]) -> str | None:
    """The expression the moves of ``steps`` (an active line) build from ``numbers``; None if invalid."""
    ops = steps_ops(steps)
    return None if ops is None else expression(numbers, ops)
