"""Check a Countdown answer: a safe arithmetic parser (no eval) and the rules, with a clear reason."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction


@dataclass
class CheckResult:
    """``ok`` when the expression is valid and equals the target; ``reason`` says why not."""

    ok: bool
    reason: str
    value: int | None = None


class _ParseError(ValueError):
    pass


class _RuleError(ValueError):
    pass


_TOKEN_RE = re.compile(r"\s*(?:(\d+)|(.))")
_OP_ALIASES = {"×": "*", "x": "*", "X": "*", "·": "*", "÷": "/", "−": "-", "–": "-"}


def _tokenize(text: str) -> list[str]:
    toks: list[str] = []
    for m in _TOKEN_RE.finditer(text):
        num, ch = m.groups()
        if num is not None:
            toks.append(num)
        elif ch is not None and not ch.isspace():
            ch = _OP_ALIASES.get(ch, ch)
            if ch not in "+-*/()":
                raise _ParseError(f"unexpected character {ch!r}")
            toks.append(ch)
    return toks


class _Parser:
    """expr := term (('+'|'-') term)*; term := atom (('*'|'/') atom)*; atom := INT | '(' expr ')'."""

    def __init__(self, toks: list[str]) -> None:
        self.toks = toks
        self.i = 0
        self.used: list[int] = []

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise _ParseError("the expression ends early")
        self.i += 1
        return tok

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            right = self.term()
            value = value + right if op == "+" else value - right
        return value

    def term(self) -> Fraction:
        value = self.atom()
        while self.peek() in ("*", "/"):
            op = self.take()
            right = self.atom()
            if op == "*":
                value = value * right
            else:
                if right == 0:
                    raise _RuleError("divides by zero")
                q = value / right
                if q.denominator != 1:
                    raise _RuleError(f"{value} / {right} is not a whole number")
                value = q
        return value

    def atom(self) -> Fraction:
        tok = self.take()
        if tok == "(":
            value = self.expr()
            if self.take() != ")":
                raise _ParseError("a parenthesis is not closed")
            return value
        if tok == "-":
            raise _RuleError("uses a unary minus, which Countdown does not allow")
        if not tok.isdigit():
            raise _ParseError(f"unexpected {tok!r}")
        self.used.append(int(tok))
        return Fraction(int(tok))


def _expression_part(text: str) -> str:
    """Drop a leading "answer:" label and an "= N" side; keep the side that holds the arithmetic."""
    text = re.sub(r"^\s*(?:final\s+)?answer\s*[:=]?\s*", "", text.strip(), flags=re.I).strip().rstrip(".")
    sides = [s.strip() for s in text.split("=")]
    with_ops = [s for s in sides if re.search(r"[+\-*/×÷x]", s)]
    return with_ops[0] if with_ops else sides[0]


def _plural(n: int) -> str:
    return {2: "twice", 3: "three times"}.get(n, f"{n} times")


def check_answer(expr: str, numbers: list[int], target: int) -> CheckResult:
    """Check that ``expr`` is an arithmetic expression over ``numbers`` (each at most once), with whole
    intermediate results, equal to ``target``.

    >>> check_answer("(3 + 5) * 3", [3, 5, 3, 1], 24).ok
    True
    >>> check_answer("7 * 7 - 25", [7, 2, 25], 24).reason
    'uses 7 twice'
    """
    if not isinstance(expr, str) or not expr.strip():
        return CheckResult(False, "not an expression (empty)")
    text = _expression_part(expr)
    try:
        toks = _tokenize(text)
        if not toks:
            raise _ParseError("no numbers")
        parser = _Parser(toks)
        value = parser.expr()
        if parser.peek() is not None:
            raise _ParseError(f"unexpected {parser.peek()!r}")
    except _ParseError as e:
        return CheckResult(False, f"not an expression ({e})")
    except _RuleError as e:
        return CheckResult(False, str(e))
    have = Counter(int(x) for x in numbers)
    for num, count in Counter(parser.used).items():
        if num not in have:
            return CheckResult(False, f"uses {num}, which is not one of the numbers")
        if count > have[num]:
            return CheckResult(False, f"uses {num} {_plural(count)}")
    result = int(value) if value.denominator == 1 else None
    if value != target:
        return CheckResult(False, f"equals {value}, not {target}", result)
    return CheckResult(True, "ok", result)
