"""Exact Countdown solver: every move combines two remaining numbers into one.

A state is the sorted tuple of remaining numbers. A move takes two of them, ``a >= b``, and replaces
them with ``a + b``, ``a - b`` (never negative), ``a * b`` or ``a / b`` (only when exact). A solution
is a sequence of ``n - 1`` moves ending with the single number ``target``. Everything is memoised on
the state, so checking many targets or many states of one problem costs one search.
"""

from __future__ import annotations

from functools import lru_cache

OPS = ("+", "-", "*", "/")

State = tuple[int, ...]
Op = tuple[int, str, int, int]  # (a, op, b, result) with a >= b


def state_of(numbers: list[int] | tuple[int, ...]) -> State:
    """The canonical state: numbers sorted ascending."""
    return tuple(sorted(int(x) for x in numbers))


def state_key(state: list[int] | tuple[int, ...]) -> str:
    """The canonical string key of a state, e.g. ``"5,8,11"``."""
    return ",".join(str(x) for x in state_of(state))


def apply_op(a: int, op: str, b: int) -> int | None:
    """The result of ``a op b`` (with ``a >= b``) under Countdown rules, None when not allowed."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b if a >= b else None
    if op == "*":
        return a * b
    if op == "/":
        return a // b if b != 0 and a % b == 0 else None
    raise ValueError(f"unknown operator {op!r}")


def remove_pair(state: State, a: int, b: int) -> list[int] | None:
    """``state`` without one ``a`` and one ``b``; None if they are not both there."""
    rest = list(state)
    for x in (a, b):
        if x not in rest:
            return None
        rest.remove(x)
    return rest


@lru_cache(maxsize=200_000)
def moves(state: State) -> tuple[tuple[Op, State], ...]:
    """All distinct moves from ``state`` and the state each leads to."""
    out: list[tuple[Op, State]] = []
    seen: set[tuple[int, str, int]] = set()
    n = len(state)
    for i in range(n):
        for j in range(i + 1, n):
            a, b = max(state[i], state[j]), min(state[i], state[j])
            for op in OPS:
                if (a, op, b) in seen:
                    continue
                seen.add((a, op, b))
                c = apply_op(a, op, b)
                if c is None:
                    continue
                rest = [state[k] for k in range(n) if k not in (i, j)]
                out.append(((a, op, b, c), state_of([*rest, c])))
    return tuple(out)


@lru_cache(maxsize=200_000)
def reachable(state: State) -> frozenset[int]:
    """Every value that ``state`` can end at, using all its numbers."""
    if len(state) == 1:
        return frozenset(state)
    vals: set[int] = set()
    for _, child in moves(state):
        vals |= reachable(child)
    return frozenset(vals)


def solvable(state: list[int] | tuple[int, ...], target: int) -> bool:
    """Whether the numbers of ``state`` (all of them) can make ``target``."""
    return target in reachable(state_of(state))


@lru_cache(maxsize=50_000)
def _solutions(state: State, target: int) -> tuple[tuple[Op, ...], ...]:
    if len(state) == 1:
        return ((),) if state[0] == target else ()
    out: list[tuple[Op, ...]] = []
    for op, child in moves(state):
        if target in reachable(child):
            out.extend((op, *rest) for rest in _solutions(child, target))
    return tuple(out)


def solve(numbers: list[int] | tuple[int, ...], target: int) -> list[list[Op]]:
    """All solutions (each a list of moves) from ``numbers`` to ``target``; empty if unsolvable."""
    return [list(s) for s in _solutions(state_of(numbers), int(target))]


def expression(numbers: list[int] | tuple[int, ...], ops: list[Op]) -> str | None:
    """The arithmetic expression built by ``ops`` from ``numbers``; None if the ops do not fit them.

    Compound operands are parenthesised, e.g. ``(3 + 5) * (11 - 8)``. With fewer ops than needed to
    use every number, the expression of the last result is returned.
    """
    pool: list[tuple[int, str, bool]] = [(int(x), str(int(x)), False) for x in numbers]
    last: str | None = None
    for a, op, b, c in ops:
        if apply_op(a, op, b) != c:
            return None
        picked = []
        for v in (a, b):
            idx = next((i for i, item in enumerate(pool) if item[0] == v), None)
            if idx is None:
                return None
            picked.append(pool.pop(idx))
        ea, eb = (f"({e})" if compound else e for _, e, compound in picked)
        last = f"{ea} {op} {eb}"
        pool.append((c, last, True))
    if last is None:
        return pool[0][1] if len(pool) == 1 else None
    return last


def shortest_solution(numbers: list[int] | tuple[int, ...], target: int) -> list[Op] | None:
    """The solution with the shortest expression (ties: the first in canonical order); None if none.

    Every solution has ``n - 1`` moves, so "shortest" is about the expression a reader sees.
    """
    best: tuple[int, list[Op]] | None = None
    for sol in solve(numbers, target):
        expr = expression(numbers, sol) or ""
        if best is None or len(expr) < best[0]:
            best = (len(expr), sol)
    return None if best is None else best[1]
