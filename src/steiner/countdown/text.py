"""Arithmetic drill text for the demo's continual pre-training mixture.

CPT mixes ordinary text with reasoning paths. With no network the demo cannot fetch a corpus, so it
writes its own, and makes it the text a Countdown model needs most: the domain's arithmetic facts, in
exactly the form the steps write them (``12*7=84``), each compared with a target the way a step's
checks are (``(39? no)``). Every fact of the domain is covered (`arithmetic_facts`), and targets are
drawn from the whole target range, so equality with a target is learned as a skill on every value,
not memorised per training target: a held-out target is still never the target of a training
problem, but the model has seen what "22 = 22" looks like. (Without this, a model that computed
10 + 12 = 22 for target 22 read past the hit: no training trace ever ended on 22.)
"""

from __future__ import annotations

import random

from steiner.countdown.solver import OPS, Op, apply_op
from steiner.countdown.steps import checks_reflection


def arithmetic_facts(number_range: tuple[int, int] | list[int] = (1, 12)) -> list[Op]:
    """Every move a 3-number problem over ``number_range`` can write: first moves of two given
    numbers, and every result of a first result with the third number (larger first)."""
    lo, hi = number_range
    facts: set[Op] = set()
    for a in range(lo, hi + 1):
        for b in range(lo, a + 1):
            for op in OPS:
                c = apply_op(a, op, b)
                if c is not None:
                    facts.add((a, op, b, c))
    values = {c for *_, c in facts} | set(range(lo, hi + 1))
    for c in values:
        for d in range(lo, hi + 1):
            x, y = max(c, d), min(c, d)
            for op in OPS:
                r = apply_op(x, op, y)
                if r is not None:
                    facts.add((x, op, y, r))
    return sorted(facts)


def arithmetic_documents(n: int, seed: int = 0, *, number_range: tuple[int, int] | list[int] = (1, 12),
                         target_range: tuple[int, int] | list[int] = (10, 50), facts_per_doc: int = 16,
                         hit_rate: float = 0.25, group: int = 4) -> list[str]:
    """``n`` drill documents, deterministic for ``seed``: "make T." then facts, each compared with T.

    About ``hit_rate`` of the facts are drawn among those whose result is T, so "yes" is common enough
    to learn; the rest uniformly from `arithmetic_facts`. Every ``group`` facts (a step's worth of
    checks) end in the reflection a step writes: "12*3=36 reaches 36." at the first hit, else "No
    result is 36." -- the target written again after the words, as a step's reflection writes it, so
    that copy is practised on every target value too (without it a model reflected "No result is 24."
    on a held-out 36: teacher-forced, 0 of 205 such reflections right, 97% of the checks).
    """
    rng = random.Random(seed)
    facts = arithmetic_facts(number_range)
    by_result: dict[int, list[Op]] = {}
    for f in facts:
        by_result.setdefault(f[3], []).append(f)
    tlo, thi = target_range
    docs = []
    for _ in range(n):
        t = rng.randint(tlo, thi)
        parts = []
        for start in range(0, facts_per_doc, group):
            items, hit = [], None
            for _ in range(min(group, facts_per_doc - start)):
                a, o, b, c = (rng.choice(by_result[t]) if t in by_result and rng.random() < hit_rate
                              else rng.choice(facts))
                items.append(f"{a}{o}{b}={c} ({t}? {'yes' if c == t else 'no'})")
                if c == t and hit is None:
                    hit = f"{a}{o}{b}={c}"
            parts.append(" ".join(items) + " " + checks_reflection(hit, t))
        docs.append(f"make {t}. " + " ".join(parts))
    return docs


def state_documents(n: int, seed: int = 0, *, number_range: tuple[int, int] | list[int] = (1, 12),
                    target_range: tuple[int, int] | list[int] = (10, 50), held_out: set[int] | None = None,
                    moves: tuple[int, int] = (3, 6), hit_rate: float = 0.3) -> list[str]:
    """``n`` drill documents over a state, deterministic for ``seed``: three numbers and a target
    ("4, 8, 7 make 39."), then a few of their first moves in random order, each written after the
    numbers it starts from, as a step's thought and reflection write it::

        4, 8, 7 make 39. in 4,8,7: 8+4=12. 12,7: 12+7=19 (39? no) 12-7=5 (39? no) 12*7=84 (39? no)
        No result is 39. in 4,8,7: 8*4=32. 32,7: 32+7=39 (39? yes) 32+7=39 reaches 39.

    This is the arithmetic of a state: the numbers copied from the document's start, one move, the
    numbers it leaves and every result of those two compared with the target. No search: the moves
    are a random sample in random order, with no decision, no order and no answer expression. Targets
    come from the whole range, so copying the target is learned on every value (drawn from training
    targets only, the quick model copied none of 30 held-out targets, docs/demo.md session 32); a
    target in ``held_out`` is only drawn with numbers that cannot make it in any way, so no held-out
    problem -- numbers that make a held-out target -- ever appears. About ``hit_rate`` of the
    documents take a training target the numbers reach, so "yes" is common enough to learn.
    """
    from itertools import combinations

    from steiner.countdown.solver import reachable, state_of
    from steiner.countdown.steps import _fmt, _move, op_step, ordered_moves, step_hit

    rng = random.Random(seed)
    lo, hi = number_range
    held = held_out or set()
    targets = list(range(target_range[0], target_range[1] + 1))
    if not set(targets) - held:
        raise ValueError(f"state_documents: every target in {tuple(target_range)} is held out")

    def makes(nums: list[int], t: int) -> bool:
        return any(t in reachable(state_of(list(sub))) for k in (1, 2, 3) for sub in combinations(nums, k))

    docs = []
    while len(docs) < n:
        nums = [rng.randint(lo, hi) for _ in range(3)]
        options = ordered_moves(nums)
        reach = sorted({r for op, left in options for q in OPS
                        if (r := apply_op(max(left), q, min(left))) is not None and r in targets and r not in held})
        t = rng.choice(reach) if reach and rng.random() < hit_rate else rng.choice(targets)
        if t in held and makes(nums, t):
            continue  # these numbers are a held-out problem: draw again
        k = min(len(options), rng.randint(*moves))
        blocks = []
        for op, _ in rng.sample(options, k):
            step = op_step(nums, op, t, order=nums)
            hit = step_hit(step)
            blocks.append(f"in {_fmt(nums)}: {step.thought} {checks_reflection(_move(hit) if hit else None, t)}")
        docs.append(f"{', '.join(map(str, nums))} make {t}. " + " ".join(blocks))
    return docs


def drill_documents(n: int, seed: int = 0, *, state_share: float = 0.0,
                    number_range: tuple[int, int] | list[int] = (1, 12),
                    target_range: tuple[int, int] | list[int] = (10, 50),
                    held_out: set[int] | None = None) -> list[str]:
    """``n`` drill documents, deterministic for ``seed``: ``state_share`` of them `state_documents`
    (a held-out target only with numbers that cannot make it), the rest `arithmetic_documents`,
    shuffled together. With ``state_share`` 0 this is exactly ``arithmetic_documents(n, seed)``."""
    n_state = round(state_share * n)
    if not n_state:
        return arithmetic_documents(n, seed, number_range=number_range, target_range=target_range)
    docs = state_documents(n_state, seed, number_range=number_range, target_range=target_range, held_out=held_out)
    docs += arithmetic_documents(n - n_state, seed + 100, number_range=number_range, target_range=target_range)
    random.Random(seed).shuffle(docs)
    return docs
