"""Seeded Countdown problems, every one solvable, with a held-out split by target value.

As in Stream of Search, a fixed share of target values is held out: a problem whose target is in the
held-out set has ``split == "test"``, so no test target is ever seen in training. The held-out set is
drawn with its own ``split_seed``, independent of the problem seed, so every run agrees on it.
"""

from __future__ import annotations

import random
import re

from steiner.countdown.solver import expression, reachable, shortest_solution, state_of

PROMPT = "Using the numbers {numbers}, make {target}. Use + - * / and each number at most once."
_PROMPT_RE = re.compile(r"numbers\s+([\d,\s]+?)\s*,?\s*make\s+(\d+)", re.I)


def question_text(numbers: list[int], target: int) -> str:
    """The question prompt, e.g. "Using the numbers 3, 5, 7, 11, make 24. Use + - * / and ..."."""
    return PROMPT.format(numbers=", ".join(str(x) for x in numbers), target=target)


def parse_question(text: str) -> tuple[list[int], int] | None:
    """Recover (numbers, target) from a question written by `question_text`; None if it does not fit."""
    m = _PROMPT_RE.search(text)
    if not m:
        return None
    nums = [int(x) for x in re.findall(r"\d+", m.group(1))]
    return (nums, int(m.group(2))) if nums else None


def held_out_targets(target_range: tuple[int, int], test_fraction: float = 0.1, split_seed: int = 0) -> set[int]:
    """The held-out target values: a seeded ``test_fraction`` share of the target range."""
    lo, hi = target_range
    values = list(range(lo, hi + 1))
    k = round(len(values) * test_fraction)
    return set(random.Random(f"countdown-split:{split_seed}").sample(values, k))


def _num_numbers_choices(num_numbers: int | tuple[int, int] | list[int]) -> list[int]:
    if isinstance(num_numbers, int):
        return [num_numbers]
    lo, hi = num_numbers
    return list(range(lo, hi + 1))


def generate_problems(
    n: int,
    seed: int = 0,
    *,
    num_numbers: int | tuple[int, int] | list[int] = (3, 4),
    number_range: tuple[int, int] | list[int] = (1, 20),
    target_range: tuple[int, int] | list[int] = (10, 100),
    test_fraction: float = 0.1,
    split_seed: int = 0,
    split: str | None = None,
    number_orders: int = 1,
) -> list[dict]:
    """``n`` distinct solvable problems as question records.

    ``number_orders`` > 1 writes each problem up to that many times with its numbers in different
    orders (distinct ids, the same target and split): a search walks the numbers in the order given,
    so each order is a different trace of the same problem -- more varied search data from a domain
    with few problems (3 numbers from 1-12, targets 10-50: about 2,100 with training targets).

    Each record: ``{"id", "question", "answer" (an expression), "numbers", "target", "split"}``.
    ``num_numbers`` is a count or an inclusive (min, max) range; ``split`` = "train" or "test" keeps
    only that split (None keeps both, about ``test_fraction`` of problems landing in "test").
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
    if number_orders < 1:
        raise ValueError(f"number_orders must be at least 1, got {number_orders!r}")
    counts = _num_numbers_choices(num_numbers)
    if min(counts) < 2:
        raise ValueError(f"num_numbers must be at least 2, got {num_numbers!r}")
    nlo, nhi = number_range
    tlo, thi = target_range
    if nlo < 1 or nhi < nlo:
        raise ValueError(f"number_range must be (lo >= 1, hi >= lo), got {number_range!r}")
    if tlo < 0 or thi < tlo:
        raise ValueError(f"target_range must be (lo >= 0, hi >= lo), got {target_range!r}")
    held_out = held_out_targets((tlo, thi), test_fraction, split_seed)
    if split == "test" and not held_out:
        raise ValueError(f"test_fraction={test_fraction} holds out no target in {target_range!r}")
    rng = random.Random(f"countdown:{seed}")
    out: list[dict] = []
    seen: set[tuple[tuple[int, ...], int]] = set()
    tries = 0
    done = 0
    while done < n:
        tries += 1
        if tries > 200 * n + 1000:
            raise ValueError(f"could not find {n} distinct solvable problems with these ranges "
                             f"(found {done}); widen number_range or target_range")
        numbers = [rng.randint(nlo, nhi) for _ in range(rng.choice(counts))]
        targets = sorted(t for t in reachable(state_of(numbers)) if tlo <= t <= thi)
        if split == "test":
            targets = [t for t in targets if t in held_out]
        elif split == "train":
            targets = [t for t in targets if t not in held_out]
        if not targets:
            continue
        target = rng.choice(targets)
        if (state_of(numbers), target) in seen:
            continue
        seen.add((state_of(numbers), target))
        orders = [list(numbers)]
        for _ in range(20 * number_orders):
            if len(orders) >= number_orders:
                break
            other = rng.sample(numbers, len(numbers))
            if other not in orders:
                orders.append(other)
        for nums in orders:
            sol = shortest_solution(nums, target)
            assert sol is not None  # the target was drawn from the reachable set
            out.append({
                "id": f"countdown-{seed}-{len(out):05d}",
                "question": question_text(nums, target),
                "answer": expression(nums, sol),
                "numbers": nums,
                "target": target,
                "split": "test" if target in held_out else "train",
            })
        done += 1
    return out
