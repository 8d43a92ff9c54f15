"""Plain arithmetic prose for the demo's continual pre-training mixture.

CPT mixes ordinary text with reasoning paths. With no network the demo cannot fetch a corpus, so it
writes its own: short sentences of arithmetic facts in words and digits. They teach a from-scratch
model the operations the Countdown steps use, which a web corpus would otherwise do.
"""

from __future__ import annotations

import random

_WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
]
_OPS = {
    "+": ("plus", "the sum of {a} and {b} is {c}"),
    "-": ("minus", "{a} take away {b} leaves {c}"),
    "*": ("times", "the product of {a} and {b} is {c}"),
    "/": ("divided by", "{a} split into {b} equal parts gives {c}"),
}


def _word(n: int) -> str:
    return _WORDS[n] if 0 <= n < len(_WORDS) else str(n)


def _fact(rng: random.Random, max_operand: int, max_small: int) -> str:
    # Countdown moves combine a running value (up to max_operand) with a given number (up to max_small),
    # larger first, as the step writer prints them
    op = rng.choice("+-*/")
    a, b = rng.randint(1, max_operand), rng.randint(1, max_small)
    if op in "+*" and rng.random() < 0.5:
        a = rng.randint(1, max_small)
    if op == "/":
        a = b * rng.randint(1, max(1, max_operand // b))
    a, b = max(a, b), min(a, b)
    c = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
    word, phrase = _OPS[op]
    form = rng.choices(range(3), weights=(8, 1, 1))[0]
    if form == 0:
        return f"{a} {op} {b} = {c}."
    if form == 1:
        return f"{_word(a).capitalize()} {word} {_word(b)} is {_word(c)}."
    return phrase.format(a=a, b=b, c=c).capitalize() + "."


def arithmetic_documents(n: int, seed: int = 0, *, max_operand: int = 150, max_small: int = 12,
                         sentences: int = 12) -> list[str]:
    """``n`` short documents of ``sentences`` arithmetic facts each, deterministic for ``seed``."""
    rng = random.Random(seed)
    return [" ".join(_fact(rng, max_operand, max_small) for _ in range(sentences)) for _ in range(n)]
