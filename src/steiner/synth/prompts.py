r"""Prompts that ask a strong LLM for reasoning steps as JSON, and the parser of its replies.

The three teacher calls of method one (random truncation, SPEC section 2) share one system prompt
and one reply schema, each with a one-shot example:

- reference: the answer is given; write a clean path to it.
  ``{"steps": [{"name", "thought", "summary", "reflection"}, ...], "final_answer": str}``
- forward: the answer is hidden; continue the given steps for at most n steps, tentatively.
  ``{"steps": [...]}``
- reveal: the answer is now given; re-judge the last step, say where to resume, continue to the answer.
  ``{"reflection": str, "returns_to": int | null, "steps": [...], "final_answer": str}``

Each call also has a JSON Schema (`reply_schema`) that servers which enforce structured output
(vLLM, SGLang, OpenAI) receive as ``response_format``. The prompts ask for the steps in the language
of the question.

The parser is tolerant where a reply is unambiguous and strict where it is not. It strips
``<think>...</think>`` blocks and markdown fences, repairs LaTeX written with single backslashes
inside JSON strings (``\frac``, ``\times``, ``\nu`` would otherwise decode as a form feed, a tab, a
newline; ``\sqrt``, ``\(`` would not decode at all), picks the object that has the expected keys,
and accepts ``null`` reflections and ``"returns_to": "step 2"``. Anything else raises
`TeacherReplyError` with a named ``code`` and a message saying what is wrong, so the caller can
count it, store it in the rejects, retry, and never cache it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from steiner.format import SPECIAL_TOKENS, Step


class TeacherError(RuntimeError):
    """A teacher call failed (after its retries)."""


class TeacherReplyError(TeacherError):
    """A reply that does not follow the requested schema; ``code`` names the defect (e.g. "no_steps")."""

    def __init__(self, message: str, code: str = "malformed") -> None:
        super().__init__(message)
        self.code = code


SYSTEM_PROMPT = """You are a careful expert who writes step-by-step reasoning as JSON.
Each step is an object with four strings:
- "name": a short title of the step (a few words);
- "thought": the full reasoning of the step;
- "summary": one sentence stating what the step established;
- "reflection": a short look back at the reasoning so far (is it on track? is anything wrong?).
Write every step in the language of the question (a question in Chinese gets its steps in Chinese).
Derive everything: never say that an answer was given, revealed or expected.
Write LaTeX freely inside the strings (escape each backslash as JSON requires: "\\\\frac{1}{2}").
Reply with ONE JSON object and nothing else: no prose, no markdown fences."""

_EXAMPLE_QUESTION = (
    "Pens cost 3 dollars each. Ana buys 4 pens and pays with a 20-dollar bill. How much change does she get?"
)
_EXAMPLE_ANSWER = "8"
_GOOD_1 = {
    "name": "Cost of the pens",
    "thought": "Each pen costs 3 dollars and Ana buys 4, so the pens cost 4 * 3 = 12 dollars.",
    "summary": "The pens cost 12 dollars.",
    "reflection": "The total cost is known; next the change.",
}
_GOOD_2 = {
    "name": "Change",
    "thought": "She pays 20 dollars, so her change is 20 - 12 = 8 dollars.",
    "summary": "The change is 8 dollars.",
    "reflection": "Both steps check out: 12 + 8 = 20.",
}
_BAD_1 = {
    "name": "Cost of the pens",
    "thought": "Ana buys 4 pens at 3 dollars, so together that is 4 + 3 = 7 dollars.",
    "summary": "The pens cost 7 dollars.",
    "reflection": "The cost seems known; next the change.",
}
_BAD_2 = {
    "name": "Change",
    "thought": "She pays 20 dollars, so her change is 20 - 7 = 13 dollars.",
    "summary": "The change would be 13 dollars.",
    "reflection": "This follows from the cost found in step 1.",
}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def format_steps(steps: list[Step]) -> str:
    """Numbered plain-text rendering of steps for a prompt (1-based, as ``returns_to`` counts them)."""
    lines: list[str] = []
    for i, s in enumerate(steps, start=1):
        lines.append(f"Step {i}: {s.name}\nThought: {s.thought}\nSummary: {s.summary}\nReflection: {s.reflection}")
        if s.decision == "backtrack":
            target = "an earlier step" if s.returns_to is None else f"step {s.returns_to}"
            lines.append(f"(This line was abandoned; the reasoning went back to {target}.)")
    return "\n\n".join(lines) if lines else "(no steps yet)"


def _as_steps(dicts: list[dict]) -> list[Step]:
    return [Step(**d) for d in dicts]


def reference_messages(question: str, answer: str, max_steps: int = 8) -> list[dict[str, str]]:
    """Chat messages asking for a clean reasoning path that reaches the known ``answer``."""
    example_reply = _dumps({"steps": [_GOOD_1, _GOOD_2], "final_answer": _EXAMPLE_ANSWER})
    task = (
        "Write a clean, correct step-by-step solution of the question that reaches the given answer, "
        f"in 2 to {max_steps} steps. Derive it as if you did not know it: no step may mention that the "
        "answer was given. Reply with JSON: "
        '{"steps": [{"name": ..., "thought": ..., "summary": ..., "reflection": ...}, ...], "final_answer": ...}'
    )
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{task}\n\nExample.\nQuestion: {_EXAMPLE_QUESTION}\nAnswer: {_EXAMPLE_ANSWER}\n"
         f"Reply: {example_reply}\n\nNow your turn.\nQuestion: {question}\nAnswer: {answer}\nReply:"},
    ]


def forward_messages(question: str, prefix: list[Step], n_steps: int) -> list[dict[str, str]]:
    """Chat messages asking to continue ``prefix`` for at most ``n_steps`` steps, answer hidden."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    example_reply = _dumps({"steps": [_BAD_2]})
    task = (
        f"Continue the reasoning below by at most {n_steps} more steps. You do not know the answer: reason "
        "honestly, one step at a time, and do NOT conclude or state a final answer unless you are sure. "
        'Reply with JSON: {"steps": [{"name": ..., "thought": ..., "summary": ..., "reflection": ...}, ...]}'
    )
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{task}\n\nExample.\nQuestion: {_EXAMPLE_QUESTION}\nSteps so far:\n"
         f"{format_steps(_as_steps([_BAD_1]))}\nReply: {example_reply}\n\n"
         f"Now your turn.\nQuestion: {question}\nSteps so far:\n{format_steps(prefix)}\nReply:"},
    ]


def reveal_messages(question: str, answer: str, steps: list[Step]) -> list[dict[str, str]]:
    """Chat messages revealing ``answer`` after ``steps`` (prefix + attempt): re-judge, resume, finish."""
    n = len(steps)
    example_reply = _dumps({
        "reflection": "Step 1 added 4 + 3 instead of multiplying, so the cost and the change are wrong.",
        "returns_to": 0,
        "steps": [_GOOD_1, _GOOD_2],
        "final_answer": _EXAMPLE_ANSWER,
    })
    task = (
        f"The correct answer is now revealed. Judge the reasoning below against it. Write: \"reflection\": a "
        f"new reflection for the last step (step {n}) that names the first mistake, if any; \"returns_to\": "
        "the number of the last correct step to resume from (0 = start again from the question), or null if "
        "every step is correct; \"steps\": the continuation from that point to the answer; \"final_answer\". "
        "Name mistakes by what is wrong in the reasoning; no reflection or step may mention the revealed answer."
    )
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{task}\n\nExample.\nQuestion: {_EXAMPLE_QUESTION}\nSteps so far:\n"
         f"{format_steps(_as_steps([_BAD_1, _BAD_2]))}\nCorrect answer: {_EXAMPLE_ANSWER}\n"
         f"Reply: {example_reply}\n\nNow your turn.\nQuestion: {question}\nSteps so far:\n"
         f"{format_steps(steps)}\nCorrect answer: {answer}\nReply:"},
    ]


# ---------------------------------------------------------------- JSON Schemas of the replies

_STEP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {k: {"type": "string"} for k in ("name", "thought", "summary", "reflection")},
    "required": ["name", "thought", "summary", "reflection"],
    "additionalProperties": False,
}


def reply_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a ``"reference"``, ``"forward"`` or ``"reveal"`` reply (strict-mode compatible)."""
    steps = {"type": "array", "items": _STEP_SCHEMA, "minItems": 1}
    if kind == "reference":
        props: dict[str, Any] = {"steps": steps, "final_answer": {"type": "string"}}
    elif kind == "forward":
        props = {"steps": steps}
    elif kind == "reveal":
        props = {"reflection": {"type": "string"}, "returns_to": {"type": ["integer", "null"]},
                 "steps": {"type": "array", "items": _STEP_SCHEMA}, "final_answer": {"type": "string"}}
    else:
        raise ValueError(f"reply kind must be 'reference', 'forward' or 'reveal', got {kind!r}")
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def response_format(kind: str, mode: str) -> dict[str, Any] | None:
    """The ``response_format`` of a request in output ``mode`` ("json_schema", "json_object", "text")."""
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": f"steiner_{kind}", "schema": reply_schema(kind),
                                                        "strict": True}}
    if mode == "json_object":
        return {"type": "json_object"}
    if mode == "text":
        return None
    raise ValueError(f"output mode must be 'json_schema', 'json_object' or 'text', got {mode!r}")


# ---------------------------------------------------------------- reply parsing

_TOKEN_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))
_BACKTRACK_PREFIX_RE = re.compile(r"^\s*Back to step \d+:\s*")  # steiner.format.BACKTRACK_PREFIX
_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)

# LaTeX commands that begin with a letter JSON reads as an escape (\b \f \n \r \t \u): a backslash
# followed by one of these words is LaTeX, not a form feed + "rac"
_LATEX_ESCAPE_WORDS = frozenset("""
    bar beta begin big bigg biggl biggr bigl bigr bigcap bigcup bigoplus bigotimes bigsqcup bigstar
    bigvee bigwedge binom blacksquare bm bmod boldsymbol bot bowtie boxed breve bullet backslash because bf
    fbox flat forall frac frak frown footnotesize
    nabla natural ne nearrow neg neq nexists ngeq ngtr ni nleq nless nmid noindent nolimits nonumber
    normalsize not notin nparallel nsim nsubseteq nsupseteq nu nwarrow newline
    rangle rbrace rbrack rceil rfloor rho right rightarrow rightharpoonup rightleftharpoons rm root
    rvert rVert
    tag tan tanh tau tbinom text textbf textcolor textit textnormal textrm textsf textstyle texttt tfrac
    therefore theta thinspace tilde times tiny to top triangle triangleq tt
""".split())
_HEX = frozenset("0123456789abcdefABCDEF")


def repair_json_escapes(text: str) -> str:
    """Double the backslashes of LaTeX written inside JSON strings with single backslashes.

    Inside a string: ``\\\\``, ``\\"`` and ``\\/`` stay; ``\\uXXXX`` (four hex digits) stays; ``\\b \\f \\n
    \\r \\t`` stay unless a LaTeX command word follows (``\\frac``, ``\\times``, ``\\nu``, ``\\theta``); every
    other backslash (``\\sqrt``, ``\\(``, ``\\alpha``) becomes ``\\\\``. Outside strings nothing changes.
    """
    out: list[str] = []
    in_string = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if not in_string:
            if ch == '"':
                in_string = True
            out.append(ch)
            i += 1
            continue
        if ch == '"':
            in_string = False
            out.append(ch)
            i += 1
            continue
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < n else ""
        if nxt in ('\\', '"', "/"):
            out.append(ch + nxt)
            i += 2
            continue
        if nxt == "u" and len(text) >= i + 6 and all(c in _HEX for c in text[i + 2 : i + 6]):
            out.append(text[i : i + 6])
            i += 6
            continue
        if nxt in "bfnrt" and nxt:
            j = i + 1
            while j < n and text[j].isascii() and text[j].isalpha():
                j += 1
            if text[i + 1 : j] not in _LATEX_ESCAPE_WORDS or j == i + 2 and _plain_escape(text, j):
                out.append(ch + nxt)  # a real JSON escape: newline, tab, ...
                i += 2
                continue
        out.append("\\\\")  # LaTeX: keep the backslash itself
        i += 1
    return "".join(out)


def _plain_escape(text: str, j: int) -> bool:
    """A one-letter escape like ``\\n`` followed by a non-letter: JSON's meaning (``\\f`` alone, ``\\b`` alone)."""
    return j >= len(text) or not (text[j].isascii() and text[j].isalpha())


def strip_think(text: str) -> str:
    """``text`` without ``<think>...</think>`` blocks; an unclosed ``<think>`` drops everything after it,
    a lone ``</think>`` everything before it."""
    text = _THINK_RE.sub("", text)
    low = text.lower()
    if "</think>" in low:
        text = text[low.rfind("</think>") + len("</think>"):]
        low = text.lower()
    if "<think>" in low:
        text = text[: low.find("<think>")]
    return text


def extract_json(text: Any, expect: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON object of a reply that has the ``expect``-ed keys (the last such one).

    Think blocks, markdown fences and prose around the object are tolerated and LaTeX escapes repaired
    (`repair_json_escapes`). Without an object holding every expected key, the last object holding
    any of them, else the first object, is returned (the field checks then name what is missing).
    """
    if not isinstance(text, str) or not text.strip():
        raise TeacherReplyError("reply is empty", "empty")
    body = strip_think(text)
    first = body.find("{")
    if not body.strip():
        raise TeacherReplyError("reply is empty once its <think> block is removed", "empty")
    if first < 0:
        raise TeacherReplyError("reply holds no JSON object", "no_json")
    body = repair_json_escapes(body[first:])
    decoder = json.JSONDecoder(strict=False)  # raw newlines inside strings are fine
    objects: list[dict] = []
    first_error: str | None = None
    pos = 0
    while (start := body.find("{", pos)) >= 0:
        try:
            obj, end = decoder.raw_decode(body, start)
        except json.JSONDecodeError as e:
            first_error = first_error or f"{e.msg} at char {e.pos}"
            pos = start + 1
            continue
        if isinstance(obj, dict):
            objects.append(obj)
            pos = end
        else:
            pos = start + 1
    if not objects:
        if first_error is None:
            raise TeacherReplyError("reply holds no JSON object", "no_json")
        raise TeacherReplyError(f"reply JSON is invalid: {first_error}", "bad_json")
    full = [o for o in objects if expect and all(k in o for k in expect)]
    some = [o for o in objects if any(k in o for k in expect)]
    return (full or some)[-1] if (full or some) else objects[0]


def _text(value: Any, where: str, *, required: bool) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        got = "nothing" if value is None else type(value).__name__
        raise TeacherReplyError(f"{where} must be a string, got {got}", "missing_field")
    value = value.strip()
    if required and not value:
        raise TeacherReplyError(f"{where} is empty", "empty_field")
    m = _TOKEN_RE.search(value)
    if m:
        raise TeacherReplyError(f"{where} contains the special token {m.group(0)}", "special_token")
    return value


def parse_steps(obj: dict[str, Any], *, decision_last: str = "proceed") -> list[Step]:
    """The reply's ``steps`` as `Step` objects: all "proceed" except the last, which gets ``decision_last``.

    A step's ``reflection`` may be null or absent (it becomes "").
    """
    raw = obj.get("steps")
    if not isinstance(raw, list):
        raise TeacherReplyError("reply has no 'steps' list", "no_steps")
    if not raw:
        raise TeacherReplyError("reply 'steps' is empty", "empty_steps")
    steps: list[Step] = []
    for i, d in enumerate(raw, start=1):
        if not isinstance(d, dict):
            raise TeacherReplyError(f"step {i} is not an object but {type(d).__name__}", "bad_step")
        name = _text(d.get("name"), f"step {i} 'name'", required=True)
        name = _BACKTRACK_PREFIX_RE.sub("", name, count=1) or name  # the renderer writes that prefix itself
        steps.append(Step(
            name=name,
            thought=_text(d.get("thought"), f"step {i} 'thought'", required=True),
            summary=_text(d.get("summary"), f"step {i} 'summary'", required=True),
            reflection=_text(d.get("reflection"), f"step {i} 'reflection'", required=False),
            decision="proceed",
        ))
    steps[-1].decision = decision_last  # type: ignore[assignment]
    return steps


def _final_answer(obj: dict[str, Any]) -> str:
    value = obj.get("final_answer")
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)  # "final_answer": 24 is a fine answer
    if value is None:
        raise TeacherReplyError("reply has no 'final_answer' string", "no_final_answer")
    return _text(value, "'final_answer'", required=True)


def parse_reference_reply(text: str) -> tuple[list[Step], str]:
    """Steps (last one "end") and the final answer of a reference reply."""
    obj = extract_json(text, ("steps", "final_answer"))
    return parse_steps(obj, decision_last="end"), _final_answer(obj)


def parse_forward_reply(text: str, n_steps: int) -> list[Step]:
    """At most ``n_steps`` steps of a forward reply, "proceed" each; extra steps are dropped.

    A final answer the teacher states anyway is kept in the last step's ``meta["claimed_answer"]`` and
    that step's decision becomes "end".
    """
    obj = extract_json(text, ("steps",))
    steps = parse_steps(obj)[:n_steps]
    claimed = obj.get("final_answer")
    if isinstance(claimed, str | int | float) and not isinstance(claimed, bool) and str(claimed).strip():
        steps[-1].meta["claimed_answer"] = str(claimed).strip()
        steps[-1].decision = "end"  # the teacher believes it finished (allowed by the Teacher protocol)
    return steps


_STEP_REF_RE = re.compile(r"^\s*(?:(?:step|steps|步骤|第)\s*#?\s*)?(\d+)\s*(?:步)?\s*$", re.IGNORECASE)


def parse_returns_to(value: Any, n_before: int) -> int | None:
    """Validate ``returns_to`` against ``n_before`` steps: an int in 0..n_before-1, or None (no backtrack).

    Unambiguous spellings are accepted: ``"2"``, ``"step 2"``, ``2.0``, ``"null"``. ``n_before``
    itself ("resume from the last step") means no backtrack and becomes None.
    """
    if isinstance(value, str):
        s = value.strip()
        m = _STEP_REF_RE.match(s)
        if m:
            value = int(m.group(1))
        elif s.lower() in ("", "null", "none"):
            value = None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= n_before:
        raise TeacherReplyError(
            f"'returns_to' must be an integer in 0..{n_before} or null, got {value!r}", "bad_returns_to"
        )
    return None if value == n_before else value


def parse_reveal_reply(text: str, n_before: int) -> Any:
    """A `steiner.synth.teacher.Revealed` from a reveal reply to ``n_before`` steps (prefix + attempt).

    ``steps`` may be empty or absent only when ``returns_to`` is null (the attempt was right and done).
    ``reflection`` may be null only then too (the attempt keeps its own); a backtrack needs one.
    """
    from steiner.synth.teacher import Revealed

    obj = extract_json(text, ("reflection", "returns_to"))
    if "reflection" not in obj:
        raise TeacherReplyError("reply has no 'reflection' string", "no_reflection")
    if "returns_to" not in obj:
        raise TeacherReplyError("reply has no 'returns_to' (an integer, or null)", "bad_returns_to")
    returns_to = parse_returns_to(obj["returns_to"], n_before)
    reflection = _text(obj["reflection"], "'reflection'", required=returns_to is not None)
    # a right attempt that already finished needs no continuation
    done = returns_to is None and obj.get("steps") in ([], None)
    steps = [] if done else parse_steps(obj, decision_last="end")
    return Revealed(reflection=reflection, returns_to=returns_to, steps=steps, final_answer=_final_answer(obj))


# ---------------------------------------------------------------- language of the reasoning

_SCRIPTS = [("han", 0x4E00, 0x9FFF), ("han", 0x3400, 0x4DBF), ("kana", 0x3040, 0x30FF), ("hangul", 0xAC00, 0xD7AF),
            ("cyrillic", 0x0400, 0x04FF), ("arabic", 0x0600, 0x06FF), ("devanagari", 0x0900, 0x097F)]


def language_of(text: str) -> str | None:
    """The script a text is mostly written in: "zh", "ja", "ko", "cyrillic", "arabic", "devanagari" or
    "latin" (None when it has no letters). One CJK character weighs as much as three Latin letters, so
    "因此 x = 3" is Chinese; kana make a Han text Japanese."""
    counts: Counter = Counter()
    for ch in text or "":
        o = ord(ch)
        for name, lo, hi in _SCRIPTS:
            if lo <= o <= hi:
                counts[name] += 3 if name in ("han", "kana", "hangul") else 1
                break
        else:
            if ch.isalpha() and o < 0x250:
                counts["latin"] += 1
    if not counts:
        return None
    if counts["kana"]:
        counts["kana"] += counts.pop("han", 0)
    name = counts.most_common(1)[0][0]
    return {"han": "zh", "kana": "ja", "hangul": "ko"}.get(name, name)


def language_share(paths: list[dict]) -> dict[str, Any]:
    """How much of the reasoning of ``paths`` (``paths.jsonl`` records) is in its question's language.

    ``steps_in_question_language`` is the share over all steps; ``by_question_language`` gives the
    questions, steps and that share per question language.
    """
    total = same = 0
    per: dict[str, Counter] = {}
    for p in paths:
        q_lang = language_of(p.get("question", ""))
        c = per.setdefault(q_lang or "none", Counter())
        c["paths"] += 1
        for s in p["steps"]:
            lang = language_of(f"{s.get('thought', '')} {s.get('summary', '')}")
            total += 1
            c["steps"] += 1
            if lang == q_lang:
                same += 1
                c["same"] += 1
    return {
        "steps_in_question_language": round(same / total, 4) if total else None,
        "by_question_language": {k: {"paths": v["paths"], "steps": v["steps"],
                                     "in_question_language": round(v["same"] / v["steps"], 4) if v["steps"] else None}
                                 for k, v in sorted(per.items())},
    }
