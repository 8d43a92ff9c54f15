"""The one grader: evaluation, the RL outcome reward and synthesis answer checks all grade here.

The answer is the text after reasoning ends (`answer_text`); a completion that never ends its
reasoning has no answer. From that text we extract a choice letter, a number or an expression, and
compare it to the gold answer by *answer kind*: the generic kinds (`GENERIC_KINDS`) here -- letters
exactly, numbers and math with `math-verify`, text after SQuAD-style normalisation ("The Paris." ==
"paris") -- and a domain's own kind (``"countdown"``) by that domain's `Domain.grade`, which uses the
extractors here (`extract_expression`) and its own checker.

Entry points: `grade_record(record, completion)` for a question record (RL, synthesis: the kind is
the record's domain, else its ``answer_type``, else guessed -- `answer_kind`); `grade(task, item,
completion)` for an evaluation item; both end in `grade_answer`.
"""

from __future__ import annotations

import functools
import re
import string
import threading
from typing import Any

from steiner.domain import Grade, domain_for, get_domain
from steiner.format import REASONING_END, SPECIAL_TOKENS

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
GENERIC_KINDS: tuple[str, ...] = ("choice", "number", "math", "text")

__all__ = ["GENERIC_KINDS", "LETTERS", "Grade", "answer_kind", "answer_text", "extract_choice", "extract_expression",
           "extract_number", "grade", "grade_answer", "grade_record", "math_equal", "normalize_text"]


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
    an operator, on the last line that has one; the left side of an equation; ×, x (between operands),
    ÷, \\times and \\div normalised."""
    if not text:
        return None
    boxed = _BOXED.findall(text)
    candidates_text = boxed[-1] if boxed else text
    for line in reversed(candidates_text.splitlines()):
        line = line.replace("×", "*").replace("÷", "/").replace("\\times", "*").replace("\\div", "/")
        line = re.sub(r"(?<=[\d)])\s*[xX]\s*(?=[\d(])", " * ", line)  # "8 x 4": an x between operands
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
    return list(_mv_parse_cached(text, _mv_timeout()))


@functools.lru_cache(maxsize=4096)
def _mv_parse_cached(text: str, timeout: int | None) -> tuple:
    # memoised: synthesis grades every continuation of a question against the same gold answer, and a
    # parse costs ~14 ms (half of the embedding benchmark's grading time was re-parsing the gold)
    from math_verify import parse

    return tuple(parse(text, parsing_timeout=timeout))


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


def _bare_math(text: str) -> bool:
    """An answer with no math delimiters and no words (of 3+ letters, LaTeX commands aside)."""
    return not re.search(r"\$|\\boxed|\\\(|\\\[", text) and not re.search(r"(?<!\\)\b[A-Za-z]{3,}\b", text)


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


def grade_answer(kind: str, gold: str, answer: str | None, *, record: dict[str, Any] | None = None,
                 num_choices: int | None = None) -> Grade:
    """Grade an answer text (what follows the reasoning) against ``gold`` by answer ``kind``.

    A generic kind is graded here; any other kind names a domain (`steiner.domain.get_domain`) whose
    `grade` sees ``record`` (the question record with its domain fields). ``num_choices`` bounds the
    letters of a "choice" answer (default: all 26).
    """
    if answer is None:
        return Grade(False, None, "no answer: reasoning did not end")
    ans = answer.strip()
    if not ans:
        return Grade(False, None, "no answer: empty text after reasoning")
    if kind == "choice":
        letter = extract_choice(ans, num_choices or len(LETTERS))
        if letter is None:
            return Grade(False, None, "no choice letter found")
        ok = letter == gold
        return Grade(ok, letter, "correct" if ok else f"chose {letter}, gold {gold}")
    if kind == "number":
        num = extract_number(ans)
        if num is None:
            return Grade(False, None, "no number found")
        ok = _numbers_equal(num, gold)
        if ok is None:
            ok, _ = math_equal(gold, num)
        return Grade(bool(ok), num, "correct" if ok else f"{num} != {gold}")
    if kind == "math":
        # bare math ("3.3 \\times 10^{-19}", "((10 * 3) - 19) * 2") is read as one expression: without
        # delimiters math-verify reads only its last number ("... * 2" would equal a gold 2)
        ok, extracted = math_equal(gold, f"${ans}$") if _bare_math(ans) else (False, None)
        if extracted is None:
            ok, extracted = math_equal(gold, ans)
        if extracted is None:
            return Grade(False, None, "no expression found")
        return Grade(ok, extracted, "correct" if ok else f"{extracted} != {gold}")
    if kind == "text":
        norm = normalize_text(ans)
        ok = norm == normalize_text(gold)
        return Grade(ok, norm, "correct" if ok else "text differs")
    return get_domain(kind).grade({"answer": gold, **(record or {})}, ans)


def answer_kind(record: dict[str, Any]) -> str:
    """The answer kind of a question record: its domain's (Countdown: "countdown"), else its
    ``answer_type`` field, else "choice" when it has ``choices``, "math" when the gold answer holds a
    digit or LaTeX, else "text"."""
    dom = domain_for(record)
    if dom.answer_type:
        return dom.answer_type
    if record.get("answer_type"):
        return str(record["answer_type"])
    if record.get("choices"):
        return "choice"
    return "math" if re.search(r"[\d\\^]", str(record.get("answer", ""))) else "text"


def grade_record(record: dict[str, Any], completion: str | None) -> Grade:
    """Grade a completion (or just its answer text) of a question record -- RL and synthesis use this.

    A "choice" record's gold may be the letter or the text of one of its ``choices``.
    """
    kind = answer_kind(record)
    gold = str(record.get("answer", "")).strip()
    choices = record.get("choices") or None
    if kind == "choice" and choices and gold not in LETTERS[: len(choices)]:
        texts = [str(c).strip() for c in choices]
        gold = LETTERS[texts.index(gold)] if gold in texts else gold
    ans = None if completion is None else answer_text(completion)
    return grade_answer(kind, gold, ans, record=record, num_choices=len(choices) if choices else None)


def grade(task: Any, item: Any, completion: str) -> Grade:
    """Grade one evaluation completion (full text with reasoning tokens, or an endpoint's answer
    ``content``): ``task.answer_type`` is the kind; ``item`` an `steiner.eval.tasks.EvalItem`."""
    record = {**(item.record or {}), "id": item.id, "answer": item.answer}
    if item.numbers is not None:
        record["numbers"] = list(item.numbers)
    if item.target is not None:
        record["target"] = item.target
    return grade_answer(task.answer_type, item.answer, answer_text(completion), record=record,
                        num_choices=len(item.choices) if item.choices else None)
