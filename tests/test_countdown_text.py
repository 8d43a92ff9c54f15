"""The drill text the demo pretrains on, read back with this file's own regular expressions and arithmetic."""

from __future__ import annotations

import operator
import re

import pytest

from steiner.countdown.text import arithmetic_documents, drill_documents, state_documents

OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.floordiv}
CHECK = re.compile(r"(\d+)([-+*/])(\d+)=(\d+) \((\d+)\? (yes|no)\)")


def _true(a: int, o: str, b: int, c: int) -> bool:
    if o == "/" and (b == 0 or a % b):
        return False
    return OPS[o](a, b) == c


def _makes(nums: list[int], t: int) -> bool:
    """Whether some of ``nums`` make ``t`` with + - * / (whole results), by brute force."""
    def values(xs: tuple[int, ...]) -> set[int]:
        out = set(xs)
        for i in range(len(xs)):
            for j in range(len(xs)):
                if i != j:
                    rest = tuple(x for k, x in enumerate(xs) if k not in (i, j))
                    a, b = xs[i], xs[j]
                    for r in (a + b, a - b, a * b, a // b if b and a % b == 0 else None):
                        if r is not None and r >= 0:
                            out |= values((*rest, r))
        return out
    return t in values(tuple(nums))


def test_state_documents_are_right_and_copy_their_numbers() -> None:
    held = {22, 27, 36, 48}
    docs = state_documents(300, seed=3, held_out=held)
    assert docs == state_documents(300, seed=3, held_out=held)  # deterministic for the seed
    assert docs != state_documents(300, seed=4, held_out=held)
    hits = held_seen = 0
    for doc in docs:
        head = re.match(r"(\d+), (\d+), (\d+) make (\d+)\. ", doc)
        assert head, doc
        nums, t = [int(x) for x in head.groups()[:3]], int(head.group(4))
        assert 10 <= t <= 50 and all(1 <= x <= 12 for x in nums)
        if t in held:  # a held-out target is copied, but never with numbers that make it (a held-out problem)
            assert not _makes(nums, t), doc
            held_seen += 1
        blocks = doc[head.end():].split("in ")[1:]
        assert 1 <= len(blocks) <= 6
        for block in blocks:
            written, rest = block.split(": ", 1)
            assert [int(x) for x in written.split(",")] == nums  # the state copied from the start
            move = re.match(r"(\d+)([-+*/])(\d+)=(\d+)\. (\d+),(\d+): ", rest)
            a, o, b, c, x, y = move.groups()
            a, b, c, x, y = int(a), int(b), int(c), int(x), int(y)
            assert _true(a, o, b, c)
            left = list(nums)
            left.remove(a)
            left.remove(b)
            assert sorted([x, y]) == sorted([left[0], c]) and x >= y  # the two numbers left, larger first
            checks = CHECK.findall(rest)
            assert checks, block
            for p, q, r, s, tt, verdict in checks:
                assert (int(p), int(r)) == (x, y) and _true(int(p), q, int(r), int(s))
                assert int(tt) == t and (verdict == "yes") == (int(s) == t)
            hit = next((f"{p}{q}{r}={s}" for p, q, r, s, _, v in checks if v == "yes"), None)
            expected = f"{hit} reaches {t}." if hit else f"No result is {t}."
            assert rest.rstrip().endswith(expected), block
            hits += hit is not None
    assert hits > 0.1 * len(docs)  # "yes" is common enough to learn
    assert held_seen > 0


def test_state_documents_refuse_to_exclude_every_target() -> None:
    with pytest.raises(ValueError, match="every target.*held out"):
        state_documents(1, held_out=set(range(10, 51)))


def test_arithmetic_documents_are_right() -> None:
    for doc in arithmetic_documents(100, seed=1):
        t = int(re.match(r"make (\d+)\. ", doc).group(1))
        checks = CHECK.findall(doc)
        assert len(checks) == 16
        for p, q, r, s, tt, verdict in checks:
            assert _true(int(p), q, int(r), int(s)) and int(tt) == t and (verdict == "yes") == (int(s) == t)


def test_drill_documents_mix_state_and_fact_drill_in_the_share_asked() -> None:
    held = {22, 27, 36, 48}
    assert drill_documents(40, seed=5) == arithmetic_documents(40, 5)  # share 0: the fact drill as it was
    docs = drill_documents(40, seed=5, state_share=0.25, held_out=held)
    assert docs == drill_documents(40, seed=5, state_share=0.25, held_out=held)
    state = [d for d in docs if re.match(r"\d+, \d+, \d+ make \d+\. in ", d)]
    facts = [d for d in docs if re.match(r"make \d+\. \d+[-+*/]\d+=", d)]
    assert (len(state), len(facts)) == (10, 30)
    assert sorted(state) == sorted(state_documents(10, 5, held_out=held))
    assert sorted(facts) == sorted(arithmetic_documents(30, 105))
    assert docs[:10] != state  # shuffled together, not state first
