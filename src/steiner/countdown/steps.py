"""Countdown steps as text: the compact step writer, the search trace, and reading steps back.

One step is one move. Its text is compact (a tiny model spends its capacity on the numbers, not on
prose) and every judgment in it can be checked from the text itself. The name gives the op, then the
pair as positions in the numbers it writes out (pairs in the order the search takes them,
`pair_order`), then the move:

    name        * 2,3 in 4,8,7: 8*7
    thought     8*7=56. 56,4: 56+4=60 (39? no) 56-4=52 (39? no) 56*4=224 (39? no) 56/4=14 (39? no)
    summary     8*7=56; remaining: 56,4
    reflection  No result is 39.

A step whose checks hit writes the answer its line makes in the reflection, the move substituted
into the hit (``32+7=39 reaches 39: (8 * 4) + 7.``), so the answer after the reasoning is a copy of
the last reflection, not a substitution across the whole trace. (Before, 16% of the demo model's
samples reached the target and then wrote the answer wrong, e.g. the op of an earlier step.) With
three numbers that is the whole answer; with more, the moves before the step stay as their results.
Writing first which number of the hit the move made ("32 is 8*4, so ...") was tried and dropped: from
scratch with tied embeddings it let held-out targets drift (docs/demo.md, session 24).

When a move leaves two numbers, the thought writes out every result of those two (larger first, in
the order + - * /, stopping at the first hit) and compares each with the target explicitly
("(39? no)"), so abandoning the move after it is justified by what the trace shows, and the model
can learn the comparison for targets it never saw. A move that leaves more numbers says only its
result; its line is abandoned once every move after it was tried (`search_path`). The summary
always ends with ``remaining: ...`` (the state, read back by `step_key`), written in the order the
next moves are tried. Numbers are written without spaces so that each one is a single token in the
demo's tokenizer.
"""

from __future__ import annotations

import re
from typing import Any

from steiner.countdown.solver import OPS, Op, State, apply_op, expression, remove_pair, state_key, state_of
from steiner.format import Step

_REMAINING_RE = re.compile(r"remaining(?:\s+numbers)?\s*[:=]\s*(\d+(?:\s*(?:,|and)\s*\d+)*)", re.I)
_OP_RE = re.compile(r"(\d+)\s*([+\-*/×÷])\s*(\d+)\s*=\s*(\d+)")
_CHECK_RE = re.compile(r"(\d+)\s*([+\-*/])\s*(\d+)\s*=\s*(\d+)\s*\(\s*(\d+)\s*\?\s*(yes|no)\s*\)")


def _fmt(numbers: list[int] | tuple[int, ...]) -> str:
    return ",".join(str(x) for x in numbers)


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


def remaining_order(step: Step) -> list[int] | None:
    """The remaining numbers of ``step`` in the order written (the order the next moves are tried)."""
    for text in (step.summary, step.thought):
        found = _REMAINING_RE.findall(text or "")
        if found:
            return [int(x) for x in re.findall(r"\d+", found[-1])]
    return None


def parse_state(key: str | None) -> State | None:
    """The state tuple of a key from `step_key`."""
    if not key:
        return None
    return state_of(int(x) for x in key.split(","))


def parse_op(step: Step) -> Op | None:
    """The move ``(a, op, b, c)`` a step made (from its summary, else name/thought), with ``a >= b``."""
    for text in (step.summary, step.thought):
        m = _OP_RE.search(text or "")
        if m:
            a, op, b, c = int(m.group(1)), {"×": "*", "÷": "/"}.get(m.group(2), m.group(2)), int(m.group(3)), int(m.group(4))
            if op in "+*" and a < b:
                a, b = b, a
            return (a, op, b, c)
    return None


def parse_checks(step: Step) -> list[tuple[Op, int, bool]]:
    """The results a step compared with the target: ``[((a, op, b, c), target, said_yes), ...]``."""
    return [((int(a), op, int(b), int(c)), int(t), v == "yes")
            for a, op, b, c, t, v in _CHECK_RE.findall(step.thought or "")]


def after(state: State, op: Op) -> State | None:
    """The state after applying ``op`` to ``state``; None if the move is not legal there."""
    a, o, b, c = op
    rest = remove_pair(state, a, b)
    if rest is None or apply_op(a, o, b) != c:
        return None
    return state_of([*rest, c])


def pair_order(n: int) -> list[tuple[int, int]]:
    """The positions of every pair of ``n`` numbers in the order a search tries them: cyclically by
    gap, (1st,2nd), (2nd,3rd), ..., (nth,1st), then gap 2, ... Each pair starts where the one before
    it ended (with three numbers: 1st+2nd, 2nd+3rd, 3rd+1st). A step's name writes the pair as these
    positions ("2,3 in 4,8,7"): the next pair is then a fixed cycle of a few tokens, not a lookup of the
    numbers in the question, which the demo model could not learn (it put p = 0.24 on the right first
    number at a change of pair when names wrote the numbers, 0.86 with positions)."""
    return [(i, (i + g) % n) for g in range(1, n // 2 + 1) for i in range(n) if not (2 * g == n and i >= g)]


def written_positions(numbers: list[int] | tuple[int, ...], a: int, b: int) -> tuple[int, int]:
    """The 1-based positions in ``numbers`` of a move's pair ``a``, ``b``, in the order `pair_order`
    takes them (``(0, 0)`` if they are not both there): ``(2, 3)`` for 8 and 7 in ``4,8,7``."""
    n = len(numbers)
    i = next((k for k, x in enumerate(numbers) if x == a), None)
    j = next((k for k, x in enumerate(numbers) if x == b and k != i), None)
    if i is None or j is None:
        return 0, 0
    p, q = min(i, j), max(i, j)
    return (p + 1, q + 1) if q - p <= n // 2 else (q + 1, p + 1)


def ordered_moves(numbers: list[int]) -> list[tuple[Op, list[int]]]:
    """Every move from ``numbers`` in the order a search tries them, with the numbers it leaves.

    Pairs in `pair_order`, each with + - * / (larger number first; - and / only when the result is a
    whole number >= 0); a move that leaves the same numbers as an earlier one is skipped. The numbers
    left keep their order, the result last.
    """
    out: list[tuple[Op, list[int]]] = []
    seen: set[State] = set()
    n = len(numbers)
    for i, j in pair_order(n):
        a, b = max(numbers[i], numbers[j]), min(numbers[i], numbers[j])
        rest = [numbers[k] for k in range(n) if k not in (i, j)]
        for op in OPS:
            c = apply_op(a, op, b)
            if c is None:
                continue
            left = [*rest, c]
            if state_of(left) in seen:
                continue
            seen.add(state_of(left))
            out.append(((a, op, b, c), left))
    return out


def final_checks(x: int, y: int, target: int) -> list[tuple[Op, bool]]:
    """Every result of the two numbers ``x`` and ``y`` compared with ``target``, up to the first hit."""
    a, b = max(x, y), min(x, y)
    out: list[tuple[Op, bool]] = []
    for op in OPS:
        c = apply_op(a, op, b)
        if c is None:
            continue
        out.append(((a, op, b, c), c == target))
        if c == target:
            break
    return out


def _move(op: Op) -> str:
    a, o, b, c = op
    return f"{a}{o}{b}={c}"


def op_step(state: State | list[int], op: Op, target: int, rng: Any = None, decision: str | None = "proceed",
            *, order: list[int] | None = None) -> Step:
    """Write one move as a compact step (see the module docstring); ``rng`` is accepted and unused.

    ``order`` is the order the numbers were written in (default: sorted); the numbers left are written
    in that order, the result last. The reflection states only what the step itself shows.
    """
    a, o, b, c = op
    new = after(state_of(state), op)
    if new is None:
        raise ValueError(f"move {a} {o} {b} = {c} is not legal from {tuple(state_of(state))}")
    written = list(order) if order is not None else list(state_of(state))
    rest = remove_pair(tuple(written), a, b)
    left = [*rest, c] if rest is not None else list(new)
    thought = f"{_move(op)}."
    if len(left) == 2:
        checks = final_checks(left[0], left[1], target)
        hi, lo = max(left), min(left)
        items = " ".join(f"{_move(q)} ({target}? {'yes' if hit else 'no'})" for q, hit in checks)
        thought = f"{_move(op)}. {hi},{lo}: {items}"
        hit_op = next((q for q, hit in checks if hit), None)
        answer = expression(written, [op, hit_op]) if hit_op else None
        reflection = checks_reflection(_move(hit_op) if hit_op else None, target, answer)
        left = [hi, lo]
    elif len(left) == 1:
        thought = f"{_move(op)} ({target}? {'yes' if c == target else 'no'})"
        reflection = f"{c} reaches {target}." if c == target else f"{c} is not {target}."
    else:
        reflection = f"{len(left)} numbers left."
    i, j = written_positions(written, a, b)
    return Step(name=f"{o} {i},{j} in {_fmt(written)}: {a}{o}{b}", thought=thought,
                summary=f"{_move(op)}; remaining: {_fmt(left)}", reflection=reflection, decision=decision,  # type: ignore[arg-type]
                meta={"key": state_key(new)})


def step_hit(step: Step) -> Op | None:
    """The final move a step claims reaches the target (a "yes" in its checks), else None."""
    return next((op for op, t, yes in parse_checks(step) if yes), None)


def step_fails(step: Step, target: int) -> bool:
    """Whether ``step`` shows by itself that its line misses ``target``: it leaves two numbers and
    writes out every result of them, each compared with the target and said "no", or it leaves one
    number that is not the target. (What the step claims; `CountdownDomain.check_step` checks it.)"""
    key = parse_state(step_key(step))
    if key is None:
        return False
    checks = parse_checks(step)
    if len(key) == 1:
        return key[0] != target
    if len(key) != 2 or any(yes for _, _, yes in checks) or any(t != target for _, t, _ in checks):
        return False
    return {op for op, _, _ in checks} >= {op for op, _ in final_checks(key[0], key[1], -1)}


def ops_steps(numbers: list[int], ops: list[Op], target: int, rng: Any = None, *, end: bool = True,
              start: State | list[int] | None = None) -> list[Step]:
    """Steps for a sequence of moves from ``start`` (default: the question's numbers), one per move."""
    order = list(start) if start is not None else list(numbers)
    steps = []
    for i, op in enumerate(ops):
        last = i == len(ops) - 1
        step = op_step(order, op, target, decision="end" if (last and end) else "proceed", order=order)
        steps.append(step)
        order = remaining_order(step) or []
    return steps


BUDGET_PASSES = ("search", "recheck")


def search_path(numbers: list[int], target: int, rng: Any = None, past_answer_prob: float = 0.0,
                return_prob: float = 0.5, min_steps: int = 0,
                budget_pass: str = "search") -> tuple[list[Step], str] | None:
    """The search trace for a problem: depth-first over `ordered_moves`, every dead end explored.

    A step whose checks miss backtracks to the step it came from; a move that leaves three or more
    numbers is abandoned (its last child returns past it) only after every move after it was tried,
    and its last child's reflection says so. Ends at the first hit. None if ``numbers`` cannot make
    ``target``.

    With ``past_answer_prob`` (and a seeded ``rng``) the search may go on past a hit: the step keeps its
    checks and reflection and backtracks; the search tries the next moves from the same numbers, and
    after each of them that fails, with chance ``return_prob``, or when they run out, writes the hit's step
    again and ends there (a later hit it takes, or passes in turn). Forced to take more steps than it
    needs (`min_steps`), a model trained on such traces has a way to go on and to come back. Leaving a
    line that works claims nothing about it, so no judgment is added.

    With ``min_steps`` (a budget K) the passes are not left to chance: a hit before step K is passed, the
    search tries the next move and comes back to the hit; a return that is still before K passes the hit
    again and tries the next move after that. The rule is local (pass, one more move, back). At inference
    the step-bounds processor does the counting (it bans the end below ``min_steps``), so a forced request
    need not state the budget: measured better unstated (docs/demo.md, session 30). With
    ``budget_pass="recheck"`` a hit before K is instead passed back to the step it came from and the same
    move written again -- a second look at the hit, which the model copies from its own last step -- until
    the budget is met; the search tries nothing more.
    """
    if budget_pass not in BUDGET_PASSES:
        raise ValueError(f"budget_pass must be one of {BUDGET_PASSES}, got {budget_pass!r}")
    steps: list[Step] = []

    def passes() -> bool:
        if min_steps:
            return len(steps) < min_steps
        return past_answer_prob > 0 and rng is not None and rng.random() < past_answer_prob

    def dfs(order: list[int], parent: int) -> list[Op] | None:
        passed: list[Op] | None = None  # the moves of a hit left behind at this point
        for op, left in ordered_moves(order):
            step = op_step(order, op, target, order=order)
            steps.append(step)
            here = len(steps)
            hit = step_hit(step)
            if hit is not None or (len(left) == 1 and left[0] == target):
                found = [op] + ([hit] if hit is not None else [])
                if passes():
                    step.decision, step.returns_to = "backtrack", parent
                    if min_steps and budget_pass == "recheck":
                        while True:  # the same move again, until the budget is met
                            again = op_step(order, op, target, decision="end", order=order)
                            steps.append(again)
                            if not passes():
                                return found
                            again.decision, again.returns_to = "backtrack", parent
                    passed = found
                    continue
                step.decision = "end"
                return found
            if len(left) <= 2:
                step.decision, step.returns_to = "backtrack", parent
            else:
                deeper = dfs(remaining_order(step) or left, here)
                if deeper is not None:
                    return [op, *deeper]
                last = steps[-1]
                last.returns_to = parent
                last.reflection += f" Every move from {_fmt(left)} is tried."
            if passed is not None and min_steps:  # back to the hit after one more move
                again = op_step(order, passed[0], target, decision="end", order=order)
                steps.append(again)
                if len(steps) >= min_steps:
                    return passed
                again.decision, again.returns_to = "backtrack", parent
                continue
            if passed is not None and rng.random() < return_prob:
                break
        if passed is not None:  # back to the hit: the same step again, and the search ends there
            again = op_step(order, passed[0], target, decision="end", order=order)
            steps.append(again)
            return passed
        return None

    ops = dfs(list(numbers), 0)
    if ops is None:
        return None
    return steps, expression(numbers, ops) or ""


def checks_reflection(hit: str | None, target: int, answer: str | None = None) -> str:
    """The reflection after a step's checks: the first hit ("12*3=36") reaches the target, with the
    ``answer`` it makes when given ("12*3=36 reaches 36: (12 * 1) * 3."), or none does. (The drill
    text writes the same sentence without an answer, `steiner.countdown.text`.)"""
    if not hit:
        return f"No result is {target}."
    return f"{hit} reaches {target}: {answer}." if answer else f"{hit} reaches {target}."


def dead_end_reflection(state: State, target: int, rng: Any = None) -> str | None:
    """Why a line ending in ``state`` fails, as a step that reached it shows it; None for a state of
    three or more numbers, whose failure a single step cannot show."""
    if len(state) == 1:
        return f"{state[0]} is not {target}."
    if len(state) == 2:
        return checks_reflection(None, target)
    return None


def on_track_reflection(state: State, target: int, rng: Any = None) -> str:
    """A reflection for a step whose line goes on (it says only what the step shows)."""
    return f"{len(state)} numbers left." if len(state) > 1 else f"{state[0]} reaches {target}."


def steps_ops(steps: list[Step]) -> list[Op] | None:
    """The moves of ``steps`` in order; None if one of them names no move."""
    ops = [parse_op(s) for s in steps]
    return None if any(op is None for op in ops) else ops  # type: ignore[return-value]


def answer_from_steps(numbers: list[int], steps: list[Step]) -> str | None:
    """The expression the moves of ``steps`` (an active line) build from ``numbers``, with the final
    move the last step's checks claim reaches the target; None if invalid."""
    ops = steps_ops(steps)
    if ops is None:
        return None
    last = parse_state(step_key(steps[-1])) if steps else None
    hit = step_hit(steps[-1]) if last is not None and len(last) == 2 else None
    return expression(numbers, ops + ([hit] if hit is not None else []))
