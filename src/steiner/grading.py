"""The one grading module: answer extraction shared by every task, and `grade`.

The answer is the text after reasoning ends (`steiner.format.split_reasoning`); a completion that
never ends its reasoning has no answer. From that text we extract a choice letter, a number or an
expression, and compare it to the gold answer: letters exactly, numbers and math with `math-verify`,
Countdown expressions with `steiner.countdown.check_answer`, text after normalisation.
"""

from __future__ import annotations

import re
import string
import threading
from dataclasses import dataclass

from steiner.eval.tasks import LETTERS, EvalItem, TaskSpec
from steiner.format import REASONING_END, SPECIAL_TOKENS


@dataclass
class Grade:
    """Whether an answer is correct, what was extracted from it (the vote key for maj@k), and why."""

    correct: bool
    extracted: str | None
    reason: str


def answer_text(completion: str) -> str | None:
    """The text after ``<|reasoning_end|>``; the whole text when it holds no reasoning tokens (an
    endpoint's ``content``, a plain model); None when reasoning started but never ended."""
    idx = completion.rfind(REASONING_END)
    if idx >= 0:
        rest = completion[idx + len(REASONING_END):]
    elif any(t in completion for t in SPECIAL_TOKENS):
        return None
    else:
        rest = completion
    for t in SPECIAL_TOKENS:
        rest = rest.replace(t, "")
    return rest.replace("<|im_end|>", "").replace("<|endoftext|>", "").strip()


# ---------------------------------------------------------------- extraction

_BOXED = re.compile(r"\\boxed\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")


def _letters_re(n: int) -> str:
    return f"[A-{LETTERS[max(n, 1) - 1]}]"


def extract_choice(text: str, num_choices: int = 10) -> str | None:
    """A choice letter from free text, most explicit pattern first.

    Handles "C", "(C)", "C.", "C) text", "Answer: C", "the answer is (C)", "**C**", "\\boxed{C}",
    and finally a single distinct standalone capital letter in the valid range. Letters outside
    the first ``num_choices`` are ignored.
    """
    if not text:
        return None
    L = _letters_re(num_choices)
    t = text.strip().replace("*", "")
    patterns = [
        rf"\\boxed\{{\s*\(?({L})\)?\s*\}}",
        rf"(?i:answer)\s*(?:(?i:is|would be|should be)\s*)?(?:(?i:option|choice)\s*)?[:：\-]?\s*\(?({L})\)?(?![A-Za-z])",
        rf"(?i:option|choice)\s*\(?({L})\)?(?![A-Za-z])",
    ]
    for pat in patterns:
        found = re.findall(pat, t)
        if found:
            return found[-1]
    m = re.fullmatch(rf"\(?({L})\)?[.:)]?", t)
    if m:
        return m.group(1)
    m = re.match(rf"\(?({L})[).:](?:\s|$)", t)
    if m:
        return m.group(1)
    found = re.findall(rf"\(({L})\)", t)
    if found:
        return found[-1]
    singles = set(re.findall(rf"(?<![A-Za-z'])({L})(?![A-Za-z'])", t))
    if len(singles) == 1:
        return singles.pop()
    return None


_NUMBER = r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+"


def extract_number(text: str) -> str | None:
    """A number from free text: the boxed one, the one after "answer", else the last one; commas dropped."""
    if not text:
        return None
    boxed = _BOXED.findall(text)
    for source in (boxed[-1:] if boxed else []) + re.findall(rf"(?i:answer)[^0-9\-.]{{0,20}}({_NUMBER})", text)[-1:]:
        m = re.findall(_NUMBER, source)
        if m:
            return _clean_number(m[-1])
    m = re.findall(_NUMBER, text)
    return _clean_number(m[-1]) if m else None


def _clean_number(s: str) -> str:
    s = s.replace(",", "").rstrip(".")
    if "." in s and "/" not in s:
        s = s.rstrip("0").rstrip(".") or "0"
    return s


_EXPR_CHARS = r"[0-9\s+\-*/×÷().]"


def extract_expression(text: str) -> str | None:
    """An arithmetic expression (Countdown): the longest run of digits, operators and brackets holding
    an operator, on the last line that has one; the left side of an equation; × and ÷ normalised."""
    if not text:
        return None
    boxed = _BOXED.findall(text)
    candidates_text = boxed[-1] if boxed else text
    for line in reversed(candidates_text.splitlines()):
        line = line.replace("×", "*").replace("÷", "/").replace("\\times", "*").replace("\\div", "/")
        left = line.split("=")[0] if "=" in line else line
        runs = [r.strip() for r in re.findall(rf"{_EXPR_CHARS}+", left)]
        runs = [r for r in runs if re.search(r"\d", r) and re.search(r"[+\-*/]", r)]
        if runs:
            return max(runs, key=len)
    return None


def normalize_text(text: str) -> str:
    """Lower case, no punctuation, articles or extra spaces (SQuAD-style)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


# ---------------------------------------------------------------- math-verify


def _mv_timeout() -> int | None:
    # math-verify's timeout uses signal.alarm, which only works in the main thread
    return 5 if threading.current_thread() is threading.main_thread() else None


def _mv_parse(text: str) -> list:
    from math_verify import parse

    return parse(text, parsing_timeout=_mv_timeout())


def _as_latex(gold: str) -> str:
    return gold if ("$" in gold or "\\boxed" in gold) else f"${gold}$"


def math_equal(gold: str, answer: str) -> tuple[bool, str | None]:
    """(equal, canonical extracted string) comparing a gold answer and a free-text answer with math-verify."""
    from math_verify import verify

    pred = _mv_parse(answer)
    if not pred:
        return False, None
    g = _mv_parse(_as_latex(gold)) or _mv_parse(gold)
    extracted = str(pred[-1]) if len(pred) > 1 else str(pred[0])
    if not g:
        return normalize_text(gold) == normalize_text(extracted), extracted
    return bool(verify(g, pred, timeout_seconds=_mv_timeout())), extracted


def _numbers_equal(a: str, b: str) -> bool | None:
    def value(s: str) -> float | None:
        try:
            if "/" in s:
                num, den = s.split("/", 1)
                return float(num) / float(den)
            return float(s)
        except (ValueError, ZeroDivisionError):
            return None

    va, vb = value(_clean_number(a)), value(_clean_number(b))
    if va is None or vb is None:
        return None
    return abs(va - vb) <= 1e-6 * max(1.0, abs(va))


# ---------------------------------------------------------------- grade


def grade(task: TaskSpec, item: EvalItem, completion: str) -> Grade:
    """Grade one completion (full text with reasoning tokens, or an endpoint's answer ``content``)."""
    ans = answer_text(completion)
    if ans is None:
        return Grade(False, None, "no answer: reasoning did not end")
    if not ans:
        return Grade(False, None, "no answer: empty text after reasoning")
    kind = task.answer_type
    if kind == "choice":
        letter = extract_choice(ans, len(item.choices or LETTERS))
        if letter is None:
            return Grade(False, None, "no choice letter found")
        ok = letter == item.answer
        return Grade(ok, letter, "correct" if ok else f"chose {letter}, gold {item.answer}")
    if kind == "number":
        num = extract_number(ans)
        if num is None:
            return Grade(False, None, "no number found")
        ok = _numbers_equal(num, item.answer)
        if ok is None:
            ok, _ = math_equal(item.answer, num)
        return Grade(bool(ok), num, "correct" if ok else f"{num} != {item.answer}")
    if kind == "math":
        ok, extracted = math_equal(item.answer, ans)
        if extracted is None:
            return Grade(False, None, "no expression found")
        return Grade(ok, extracted, "correct" if ok else f"{extracted} != {item.answer}")
    if kind == "countdown":
        from steiner.countdown import check_answer

        expr = extract_expression(ans)
        if expr is None:
            return Grade(False, None, "no expression found")
        if item.numbers is None or item.target is None:
            return Grade(False, expr, "the question has no numbers/target")
        res = check_answer(expr, list(item.numbers), int(item.target))
        key = re.sub(r"\s+", "", expr)
        return Grade(bool(res.ok), key, "correct" if res.ok else res.reason)
    norm = normalize_text(ans)
    ok = norm == normalize_text(item.answer)
    return Grade(ok, norm, "correct" if ok else "text differs")

