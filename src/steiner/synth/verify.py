"""Checks of the step records a teacher wrote, before they become DAGs and training paths.

Answers are compared with the project's one grader (`steiner.grading.grade_record`): math-verify for
math (and numbers), choice letters for multiple choice, the domain's own grader (Countdown), normalised
exact match for the rest; the answer kind comes from the question record (`steiner.grading.answer_kind`).
Whether a state is a dead end is the domain's call (`steiner.domain.Domain.dead_state`).

Per record (`Verifier.check` -> `Verdict`, its ``outcome`` counted in stats.json):

* a reference's final answer must match the gold answer (``reference_wrong`` otherwise);
* a truncation record's final answer (the line after the reveal) must match (``continuation_wrong``);
* a backtrack is kept only when the abandoned attempt was really wrong: the answer it claimed is
  wrong, or (Countdown) its state cannot reach the target -- ``backtrack_verified``; an attempt
  that was right is ``backtrack_from_right`` (rejected); an attempt nothing can check is kept and
  marked ``"check": "unverifiable"`` (``backtrack_unverifiable``);
* an attempt the teacher approved (no backtrack) whose claimed answer is wrong, or whose Countdown
  state is a dead end, is ``approved_wrong`` (rejected);
* any step text that cites the given or revealed answer ("matches the given answer", "the correct
  answer is ...", "正确答案") is ``cites_answer`` (rejected): a student cannot know the answer
  before deriving it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from steiner.format import Step, step_from_dict

# phrases that lean on an answer the reasoner was given instead of one it derived
_CITES = re.compile(
    r"(?i)\b(?:the|a|this|that|our)\s+(?:given|revealed|provided|expected|known|correct|official|reference|"
    r"stated|supplied|gold)\s+(?:final\s+)?(?:answer|solution|result)\b"
    r"|\b(?:answer|solution)\s+(?:is|was|has\s+been)\s+(?:given|revealed|provided|known)\b"
    r"|\banswer\s+key\b"
    r"|(?:给定|已知|正确|参考|标准|给出的|揭晓的|提供的)答案"
)


@dataclass
class Verdict:
    """Whether to keep a record, the counted outcome, a mark stored on kept records, and why."""

    keep: bool
    outcome: str
    detail: str = ""
    mark: str | None = None


def cites_answer(text: str) -> str | None:
    """The phrase of ``text`` that cites a given or revealed answer, or None."""
    m = _CITES.search(text or "")
    return m.group(0) if m else None


class Verifier:
    """The checks of one question's step records (see the module docstring)."""

    def __init__(self, question: dict) -> None:
        from steiner.domain import domain_for
        from steiner.grading import answer_kind

        self.question = question
        self.kind = answer_kind(question)
        self.domain = domain_for(question)
        self._cache: dict[str, bool] = {}

    def correct(self, answer: str | None) -> bool:
        """Whether ``answer`` matches the gold answer (by the one grader)."""
        from steiner.grading import grade_record

        if answer is None or not str(answer).strip():
            return False
        answer = str(answer)
        if answer not in self._cache:
            self._cache[answer] = grade_record(self.question, answer).correct
        return self._cache[answer]

    def _dead_state(self, steps: list[Step]) -> bool | None:
        """Whether the state after ``steps`` cannot lead to the answer (None: the domain cannot tell)."""
        return self.domain.dead_state(self.question, steps[-1]) if steps else None

    def check(self, record: dict) -> Verdict:
        """The verdict on one ``steps.jsonl`` record."""
        steps = [step_from_dict(s) for s in record["steps"]]
        for i, s in enumerate(steps, start=1):
            for field in ("thought", "summary", "reflection"):
                phrase = cites_answer(getattr(s, field))
                if phrase:
                    return Verdict(False, "cites_answer", f"step {i} {field}: {phrase!r}")
        final = record.get("final_answer")
        if record.get("kind") == "reference":
            if not self.correct(final):
                return Verdict(False, "reference_wrong", f"final answer {final!r} != gold {self.question['answer']!r}")
            return Verdict(True, "reference_ok")
        if not self.correct(final):
            return Verdict(False, "continuation_wrong", f"final answer {final!r} != gold {self.question['answer']!r}")
        attempt = [s for s in steps if (s.meta or {}).get("part") == "attempt"]
        if not attempt:
            return Verdict(True, "approved")
        claimed = next((s.meta["claimed_answer"] for s in reversed(attempt) if (s.meta or {}).get("claimed_answer")),
                       None)
        claimed_ok = None if claimed is None else self.correct(claimed)
        dead = self._dead_state(attempt)
        if attempt[-1].decision == "backtrack":
            if claimed_ok is True or (claimed is None and dead is False):
                why = f"claimed answer {claimed!r} is right" if claimed_ok else "its state can still reach the target"
                return Verdict(False, "backtrack_from_right", f"abandoned attempt was right: {why}")
            if claimed_ok is False or dead:
                return Verdict(True, "backtrack_verified")
            return Verdict(True, "backtrack_unverifiable", mark="unverifiable")
        if claimed_ok is False or dead:
            why = f"claimed answer {claimed!r} is wrong" if claimed_ok is False else "its state cannot reach the target"
            return Verdict(False, "approved_wrong", f"the teacher approved a wrong attempt: {why}")
        return Verdict(True, "approved")
