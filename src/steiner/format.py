"""The Steiner reasoning format: 14 special tokens, steps, paths, `render` and a never-crashing `parse`.

A completion is ``<|reasoning_start|>`` then steps, then ``<|reasoning_end|>`` and the final answer.
Each step is ``<|reasoning_step_start|>`` name, thought, summary, reflection ``<|reasoning_step_end|>``
followed by its decision token: ``<|reasoning_proceed|>``, ``<|reasoning_backtrack|>`` or, for the last
step, ``<|reasoning_end|>``. The step after a backtrack names where it resumes with a name prefix
"Back to step K: " (K is 1-based in emitted order; 0 is the question), so that the target of every
backtrack survives a round trip through text and the model learns to say where it resumes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

SPECIAL_TOKENS = [
    # the whole reasoning block sits between these two; the final answer follows reasoning_end
    "<|reasoning_start|>",
    "<|reasoning_end|>",  # also the "end" decision after the last step
    # decisions written after each step_end: go on from here, or abandon this line and resume earlier
    "<|reasoning_proceed|>",
    "<|reasoning_backtrack|>",
    # one step: name, thought, summary, reflection, in that order
    "<|reasoning_step_start|>",
    "<|reasoning_step_end|>",
    "<|reasoning_step_name_start|>",  # a short title for the step
    "<|reasoning_step_name_end|>",
    "<|reasoning_step_thought_start|>",  # the full thought
    "<|reasoning_step_thought_end|>",
    "<|reasoning_step_summary_start|>",  # what later turns keep of this step (multi-turn)
    "<|reasoning_step_summary_end|>",
    "<|reasoning_step_reflection_start|>",  # a look back at the reasoning so far
    "<|reasoning_step_reflection_end|>",
]

(
    REASONING_START,
    REASONING_END,
    PROCEED,
    BACKTRACK,
    STEP_START,
    STEP_END,
    NAME_START,
    NAME_END,
    THOUGHT_START,
    THOUGHT_END,
    SUMMARY_START,
    SUMMARY_END,
    REFLECTION_START,
    REFLECTION_END,
) = SPECIAL_TOKENS

FIELDS = ("name", "thought", "summary", "reflection")
FIELD_TOKENS = {
    "name": (NAME_START, NAME_END),
    "thought": (THOUGHT_START, THOUGHT_END),
    "summary": (SUMMARY_START, SUMMARY_END),
    "reflection": (REFLECTION_START, REFLECTION_END),
}
DECISION_TOKENS = {"proceed": PROCEED, "backtrack": BACKTRACK, "end": REASONING_END}

# Words whose embeddings seed each new token's row (see steiner.tokenizer).
TOKEN_DESCRIPTIONS = {
    REASONING_START: "reasoning start",
    REASONING_END: "reasoning end",
    PROCEED: "reasoning proceed",
    BACKTRACK: "reasoning backtrack",
    STEP_START: "reasoning step start",
    STEP_END: "reasoning step end",
    NAME_START: "reasoning step name start",
    NAME_END: "reasoning step name end",
    THOUGHT_START: "reasoning step thought start",
    THOUGHT_END: "reasoning step thought end",
    SUMMARY_START: "reasoning step summary start",
    SUMMARY_END: "reasoning step summary end",
    REFLECTION_START: "reasoning step reflection start",
    REFLECTION_END: "reasoning step reflection end",
}

Decision = Literal["proceed", "backtrack", "end"]
DECISIONS: tuple[str, ...] = ("proceed", "backtrack", "end")

BACKTRACK_PREFIX = "Back to step {k}: "
_BACKTRACK_PREFIX_RE = re.compile(r"Back to step (\d+): ")
_TOKEN_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))


def min_steps_prompt(min_steps: int) -> str:
    """The system message that states a step budget: training data written for ``min_steps`` carries it,
    and a request forced to ``min_steps`` sends it, so the model knows why it may not end yet."""
    if isinstance(min_steps, bool) or not isinstance(min_steps, int) or min_steps < 1:
        raise ValueError(f"min_steps must be a positive integer, got {min_steps!r}")
    return f"Take at least {min_steps} steps."


class FormatError(ValueError):
    """Raised by `render` on an invalid path, and by `parse(..., strict=True)` on malformed text."""


@dataclass
class Step:
    """One reasoning step.

    ``returns_to`` only matters when ``decision == "backtrack"``: the 1-based index (in emitted order)
    of the step whose end state the reasoning resumes from, 0 for the question itself, None if unknown.
    ``decision`` is None only for a step that was cut off before deciding. ``meta`` carries provenance
    (question, cut, attempt, DAG node id) and is neither rendered nor compared.
    """

    name: str = ""
    thought: str = ""
    summary: str = ""
    reflection: str = ""
    decision: Decision | None = "proceed"
    returns_to: int | None = None
    meta: dict = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Problem:
    """A named defect found by `parse`, at a character position of the parsed text."""

    code: str
    message: str
    pos: int

    def __str__(self) -> str:
        return f"{self.code} at char {self.pos}: {self.message}"


@dataclass
class ReasoningPath:
    """Steps in emitted order and the final answer (None while reasoning has not ended)."""

    steps: list[Step] = field(default_factory=list)
    answer: str | None = None
    problems: list[Problem] = field(default_factory=list, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def complete(self) -> bool:
        return self.answer is not None

    @property
    def num_backtracks(self) -> int:
        return sum(s.decision == "backtrack" for s in self.steps)

    def active_steps(self) -> list[Step]:
        """The steps on the line that reached the answer, abandoned branches removed.

        A backtrack with an unknown target abandons only the step that backtracked.
        """
        stack: list[int] = []  # 1-based indices of the steps on the current line
        for i, step in enumerate(self.steps, start=1):
            stack.append(i)
            if step.decision == "backtrack":
                if step.returns_to is None:
                    stack.pop()
                else:
                    stack = [j for j in stack if j <= step.returns_to]
        return [self.steps[j - 1] for j in stack]


def _check_text(value: str, where: str) -> None:
    m = _TOKEN_RE.search(value)
    if m:
        raise FormatError(f"{where} contains the special token {m.group(0)!r}; field text cannot hold one")


def validate(path: ReasoningPath) -> None:
    """Raise `FormatError` naming the first reason ``path`` cannot be rendered."""
    n = len(path.steps)
    for i, step in enumerate(path.steps, start=1):
        if step.decision not in (*DECISIONS, None):
            raise FormatError(f"step {i}: decision must be one of {DECISIONS}, got {step.decision!r}")
        if step.decision is None and i != n:
            raise FormatError(f"step {i}: only the last step may be undecided (decision=None)")
        if step.decision == "end" and i != n:
            raise FormatError(f"step {i}: decision 'end' is only allowed on the last step")
        if step.decision == "backtrack" and step.returns_to is not None:
            if not isinstance(step.returns_to, int) or not 0 <= step.returns_to < i:
                raise FormatError(f"step {i}: returns_to must be an earlier step in 0..{i - 1}, got {step.returns_to!r}")
        prev = path.steps[i - 2] if i > 1 else None
        if prev is not None and prev.decision == "backtrack" and prev.returns_to is None:
            if _BACKTRACK_PREFIX_RE.match(step.name):
                raise FormatError(f"step {i}: name starts like a backtrack prefix but step {i - 1} has no returns_to")
        for f in FIELDS:
            value = getattr(step, f)
            if not isinstance(value, str):
                raise FormatError(f"step {i}: {f} must be a string, got {type(value).__name__}")
            _check_text(value, f"step {i} {f}")
    if path.answer is not None:
        _check_text(path.answer, "answer")
        if n and path.steps[-1].decision != "end":
            raise FormatError(f"step {n}: a path with an answer must end with decision 'end'")
    elif n and path.steps[-1].decision == "end":
        raise FormatError(f"step {n}: decision 'end' needs an answer (use answer='' for an empty one)")


def render_step(step: Step, *, summaries_only: bool = False, resumes_from: int | None = None) -> str:
    """One step and its decision token; ``resumes_from`` writes the backtrack prefix into the name."""
    parts = [STEP_START]
    if summaries_only:
        parts += [SUMMARY_START, step.summary, SUMMARY_END]
    else:
        name = step.name if resumes_from is None else BACKTRACK_PREFIX.format(k=resumes_from) + step.name
        for f in FIELDS:
            start, end = FIELD_TOKENS[f]
            parts += [start, name if f == "name" else getattr(step, f), end]
    parts.append(STEP_END)
    if step.decision is not None:
        parts.append(DECISION_TOKENS[step.decision])
    return "".join(parts)


def render(path: ReasoningPath, *, summaries_only: bool = False) -> str:
    """Render a path as text; ``summaries_only`` keeps just each step's summary (earlier chat turns)."""
    validate(path)
    out = [REASONING_START]
    prev: Step | None = None
    for step in path.steps:
        resumes = prev.returns_to if prev is not None and prev.decision == "backtrack" else None
        out.append(render_step(step, summaries_only=summaries_only, resumes_from=resumes))
        prev = step
    if not path.steps and path.answer is not None:
        out.append(REASONING_END)
    if path.answer is not None:
        out.append(path.answer)
    return "".join(out)


def _segments(text: str) -> list[tuple[str, str, int]]:
    """Split text into ("tok"|"text", value, position) segments."""
    segs: list[tuple[str, str, int]] = []
    last = 0
    for m in _TOKEN_RE.finditer(text):
        if m.start() > last:
            segs.append(("text", text[last : m.start()], last))
        segs.append(("tok", m.group(0), m.start()))
        last = m.end()
    if last < len(text):
        segs.append(("text", text[last:], last))
    return segs


_FIELD_OF_START = {v[0]: k for k, v in FIELD_TOKENS.items()}
_FIELD_OF_END = {v[1]: k for k, v in FIELD_TOKENS.items()}
_DECISION_OF = {v: k for k, v in DECISION_TOKENS.items()}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.problems: list[Problem] = []
        self.steps: list[Step] = []
        self.answer: str | None = None

    def problem(self, code: str, message: str, pos: int) -> None:
        self.problems.append(Problem(code, message, pos))

    def run(self) -> ReasoningPath:
        text = self.text
        segs = _segments(text)
        if not text.strip():
            self.problem("empty", "the text is empty", 0)
            return self._result()
        if not any(kind == "tok" for kind, _, _ in segs):
            self.problem("no_reasoning", "no reasoning tokens; the whole text is taken as the answer", 0)
            self.answer = text.strip()
            return self._result()
        i = 0
        # preamble before <|reasoning_start|>
        while i < len(segs) and not (segs[i][0] == "tok" and segs[i][1] == REASONING_START):
            kind, val, pos = segs[i]
            if kind == "tok":
                break
            if val.strip():
                self.problem("text_before_reasoning", "text before <|reasoning_start|> is ignored", pos)
            i += 1
        if i < len(segs) and segs[i][1] == REASONING_START:
            i += 1
        else:
            pos = segs[i][2] if i < len(segs) else len(text)
            self.problem("missing_reasoning_start", "the text does not open with <|reasoning_start|>", pos)

        step: Step | None = None  # the open step
        cur_field: str | None = None
        seen_fields: set[str] = set()
        awaiting_decision: Step | None = None

        def close_step(at: int, how: str) -> None:
            nonlocal step, cur_field, seen_fields
            if step is None:
                return
            if cur_field is not None:
                self.problem("unclosed_field", f"{cur_field} is not closed before {how}", at)
                cur_field = None
            self._finish_fields(step, seen_fields, at)
            step = None
            seen_fields = set()

        while i < len(segs):
            kind, val, pos = segs[i]
            i += 1
            if kind == "text":
                if step is not None and cur_field is not None:
                    setattr(step, cur_field, getattr(step, cur_field) + val)
                elif val.strip():
                    where = "inside a step outside any field" if step is not None else "between steps"
                    self.problem("stray_text", f"text {where} is ignored", pos)
                continue
            tok = val
            if tok in _FIELD_OF_START:
                f = _FIELD_OF_START[tok]
                if step is None:
                    self.problem("field_outside_step", f"{tok} outside a step; a step is opened", pos)
                    if awaiting_decision is not None:
                        awaiting_decision.decision = "proceed"
                    step = self._open_step()
                    awaiting_decision = None
                if cur_field is not None:
                    self.problem("unclosed_field", f"{cur_field} is not closed before {tok}", pos)
                if f in seen_fields:
                    self.problem("repeated_field", f"{f} appears twice in one step; the text is appended", pos)
                elif seen_fields and FIELDS.index(f) < max(FIELDS.index(s) for s in seen_fields):
                    self.problem("field_order", f"{f} comes after a later field", pos)
                seen_fields.add(f)
                cur_field = f
            elif tok in _FIELD_OF_END:
                f = _FIELD_OF_END[tok]
                if cur_field != f:
                    self.problem("stray_token", f"{tok} does not close an open {f}", pos)
                else:
                    cur_field = None
            elif tok == STEP_START:
                if step is not None:
                    self.problem("missing_step_end", "a step starts before the previous one ended", pos)
                    close_step(pos, tok)
                    self.problem("missing_decision", "the unfinished step is taken as proceed", pos)
                    self.steps[-1].decision = "proceed"
                elif awaiting_decision is not None:
                    self.problem("missing_decision", "a step starts before the previous step's decision", pos)
                    awaiting_decision.decision = "proceed"
                step = self._open_step()
                awaiting_decision = None
            elif tok == STEP_END:
                if step is None:
                    self.problem("stray_token", "<|reasoning_step_end|> outside a step", pos)
                    continue
                close_step(pos, tok)
                awaiting_decision = self.steps[-1]
                awaiting_decision.decision = None
            elif tok in (PROCEED, BACKTRACK):
                if step is not None:
                    self.problem("missing_step_end", f"{tok} inside a step; the step is closed", pos)
                    close_step(pos, tok)
                    awaiting_decision = self.steps[-1]
                if awaiting_decision is None:
                    self.problem("stray_token", f"{tok} without a step to decide on", pos)
                    continue
                awaiting_decision.decision = _DECISION_OF[tok]
                awaiting_decision = None
            elif tok == REASONING_END:
                if step is not None:
                    self.problem("missing_step_end", "reasoning ends inside a step; the step is closed", pos)
                    close_step(pos, tok)
                    awaiting_decision = self.steps[-1]
                if awaiting_decision is not None:
                    awaiting_decision.decision = "end"
                elif self.steps:
                    self.problem("end_after_decision", "reasoning ends right after a proceed/backtrack", pos)
                    self.steps[-1].decision = "end"
                rest = text[pos + len(tok) :]
                if _TOKEN_RE.search(rest):
                    m = _TOKEN_RE.search(rest)
                    self.problem("token_in_answer", f"{m.group(0)} after reasoning ended is dropped", pos + len(tok) + m.start())
                    rest = _TOKEN_RE.sub("", rest)
                self.answer = rest
                return self._result()
            elif tok == REASONING_START:
                self.problem("repeated_token", "<|reasoning_start|> appears again and is ignored", pos)
        # ran out of text before <|reasoning_end|>
        if step is not None:
            self.problem("truncated", "the text ends inside a step", len(text))
            close_step(len(text), "the end of the text")
            self.steps[-1].decision = None
        elif awaiting_decision is not None:
            self.problem("truncated", "the text ends before the last step's decision", len(text))
        else:
            self.problem("truncated", "the text ends before <|reasoning_end|>", len(text))
        return self._result()

    def _open_step(self) -> Step:
        step = Step(decision=None)
        self.steps.append(step)
        return step

    def _finish_fields(self, step: Step, seen: set[str], at: int) -> None:
        missing = [f for f in FIELDS if f not in seen]
        if missing:
            self.problem("missing_field", f"step {len(self.steps)} lacks {', '.join(missing)}", at)
        # the backtrack prefix in this step's name tells where the previous backtrack returned to
        idx = len(self.steps) - 1
        if idx >= 1 and self.steps[idx - 1].decision == "backtrack":
            m = _BACKTRACK_PREFIX_RE.match(step.name)
            if m:
                k = int(m.group(1))
                if k < idx:
                    self.steps[idx - 1].returns_to = k
                    step.name = step.name[m.end() :]
                else:
                    self.problem("bad_backtrack_target", f"step {idx + 1} resumes from step {k}, which is not earlier", at)

    def _result(self) -> ReasoningPath:
        self.problems.sort(key=lambda p: p.pos)
        return ReasoningPath(steps=self.steps, answer=self.answer, problems=self.problems)


def parse(text: str, *, strict: bool = False) -> ReasoningPath:
    """Parse a completion into a `ReasoningPath`.

    Lenient by default: never raises; what it recovers comes back with ``path.problems``, each a named
    defect at a character position. With ``strict=True`` the first problem raises `FormatError`.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse expects a str, got {type(text).__name__}")
    path = _Parser(text).run()
    if strict and path.problems:
        raise FormatError(str(path.problems[0]))
    return path


def split_reasoning(text: str) -> tuple[str, str]:
    """Split a completion into (reasoning text including its tokens, answer text)."""
    idx = text.find(REASONING_END)
    if idx < 0:
        return text, ""
    cut = idx + len(REASONING_END)
    return text[:cut], text[cut:]


def step_to_dict(step: Step) -> dict[str, Any]:
    """A JSON-ready step; non-empty ``meta`` (provenance, DAG node id under "node", exact key under
    "key") is kept under ``"meta"``."""
    d: dict[str, Any] = {f: getattr(step, f) for f in FIELDS}
    d["decision"] = step.decision
    d["returns_to"] = step.returns_to
    if step.meta:
        d["meta"] = dict(step.meta)
    return d


def step_from_dict(d: dict[str, Any]) -> Step:
    """Inverse of `step_to_dict`."""
    return Step(
        name=d.get("name", ""),
        thought=d.get("thought", ""),
        summary=d.get("summary", ""),
        reflection=d.get("reflection", ""),
        decision=d.get("decision", "proceed"),
        returns_to=d.get("returns_to"),
        meta=dict(d.get("meta") or {}),
    )


def path_to_dict(path: ReasoningPath) -> dict[str, Any]:
    return {"steps": [step_to_dict(s) for s in path.steps], "final_answer": path.answer}


def path_from_dict(d: dict[str, Any]) -> ReasoningPath:
    return ReasoningPath(steps=[step_from_dict(s) for s in d.get("steps", [])], answer=d.get("final_answer"))


def path_to_messages_steps(path: ReasoningPath) -> list[dict[str, Any]]:
    """Steps as the chat template expects them in an assistant message's ``"steps"``."""
    return [step_to_dict(s) for s in path.steps]
