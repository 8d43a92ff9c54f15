"""Prompts that ask a strong LLM for reasoning steps as JSON, and the parser of its replies.

The three teacher calls of method one (random truncation, SPEC section 2) share one system prompt
and one reply schema, each with a one-shot example:

- reference: the answer is given; write a clean path to it.
  ``{"steps": [{"name", "thought", "summary", "reflection"}, ...], "final_answer": str}``
- forward: the answer is hidden; continue the given steps for at most n steps, tentatively.
  ``{"steps": [...]}``
- reveal: the answer is now given; re-judge the last step, say where to resume, continue to the answer.
  ``{"reflection": str, "returns_to": int | null, "steps": [...], "final_answer": str}``

The parser is strict on purpose: a malformed reply raises `TeacherReplyError` with a named ``code``
and a message saying what is wrong, so the caller can count it, retry, and never cache it.
"""

from __future__ import annotations

import json
import re
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
        f"in 2 to {max_steps} steps. Reply with JSON: "
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
        "every step is correct; \"steps\": the continuation from that point to the answer; \"final_answer\"."
    )
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{task}\n\nExample.\nQuestion: {_EXAMPLE_QUESTION}\nSteps so far:\n"
         f"{format_steps(_as_steps([_BAD_1, _BAD_2]))}\nCorrect answer: {_EXAMPLE_ANSWER}\n"
         f"Reply: {example_reply}\n\nNow your turn.\nQuestion: {question}\nSteps so far:\n"
         f"{format_steps(steps)}\nCorrect answer: {answer}\nReply:"},
    ]


# ---------------------------------------------------------------- reply parsing

_FENCE_RE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_TOKEN_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))
_BACKTRACK_PREFIX_RE = re.compile(r"^\s*Back to step \d+:\s*")  # steiner.format.BACKTRACK_PREFIX


def extract_json(text: Any) -> dict[str, Any]:
    """The first JSON object in a reply (markdown fences and surrounding prose tolerated)."""
    if not isinstance(text, str) or not text.strip():
        raise TeacherReplyError("reply is empty", "empty")
    candidates = [m.group(1) for m in _FENCE_RE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    first_error: str | None = None
    for cand in candidates:
        start = cand.find("{")
        while start >= 0:
            try:
                obj, _ = decoder.raw_decode(cand, start)
            except json.JSONDecodeError as e:
                first_error = first_error or f"{e.msg} at char {e.pos}"
                start = cand.find("{", start + 1)
                continue
            if isinstance(obj, dict):
                return obj
            start = cand.find("{", start + 1)
    if first_error is None:
        raise TeacherReplyError("reply holds no JSON object", "no_json")
    raise TeacherReplyError(f"reply JSON is invalid: {first_error}", "bad_json")


def _text(value: Any, where: str, *, required: bool) -> str:
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
    """The reply's ``steps`` as `Step` objects: all "proceed" except the last, which gets ``decision_last``."""
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
            reflection=_text(d.get("reflection", ""), f"step {i} 'reflection'", required=False),
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
    obj = extract_json(text)
    return parse_steps(obj, decision_last="end"), _final_answer(obj)


def parse_forward_reply(text: str, n_steps: int) -> list[Step]:
    """At most ``n_steps`` steps of a forward reply, "proceed" each; extra steps are dropped.

    A final answer the teacher states anyway is kept in the last step's ``meta["claimed_answer"]`` and
    that step's decision becomes "end".
    """
    obj = extract_json(text)
    steps = parse_steps(obj)[:n_steps]
    claimed = obj.get("final_answer")
    if isinstance(claimed, str | int | float) and not isinstance(claimed, bool) and str(claimed).strip():
        steps[-1].meta["claimed_answer"] = str(claimed).strip()
        steps[-1].decision = "end"  # the teacher believes it finished (allowed by the Teacher protocol)
    return steps


def parse_returns_to(value: Any, n_before: int) -> int | None:
    """Validate ``returns_to`` against ``n_before`` steps: an int in 0..n_before-1, or None (no backtrack).

    ``n_before`` itself ("resume from the last step") means no backtrack and becomes None.
    """
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= n_before:
        raise TeacherReplyError(
            f"'returns_to' must be an integer in 0..{n_before} or null, got {value!r}", "bad_returns_to"
        )
    return None if value == n_before else value


def parse_reveal_reply(text: str, n_before: int) -> Any:
    """A `steiner.synth.teacher.Revealed` from a reveal reply to ``n_before`` steps (prefix + attempt).

    ``steps`` may be empty or absent only when ``returns_to`` is null (the attempt was right and done).
    """
    from steiner.synth.teacher import Revealed

    obj = extract_json(text)
    if "reflection" not in obj:
        raise TeacherReplyError("reply has no 'reflection' string", "no_reflection")
    reflection = _text(obj["reflection"], "'reflection'", required=True)
    if "returns_to" not in obj:
        raise TeacherReplyError("reply has no 'returns_to' (an integer, or null)", "bad_returns_to")
    returns_to = parse_returns_to(obj["returns_to"], n_before)
    # a right attempt that already finished needs no continuation
    done = returns_to is None and obj.get("steps") in ([], None)
    steps = [] if done else parse_steps(obj, decision_last="end")
    return Revealed(reflection=reflection, returns_to=returns_to, steps=steps, final_answer=_final_answer(obj))
