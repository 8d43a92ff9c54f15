"""The teacher interface of data synthesis: what any teacher (built-in, OpenAI-compatible, local) writes.

It lives with the domain seam because a domain may bring its own teacher (`Domain.teacher`), and a
domain must not import the synthesis stage that uses it.

Conventions every teacher follows (method one, `steiner.synth.truncate`):

* `reference(q)` writes a whole path: steps in order, the last with ``decision="end"``, and the
  final answer.
* `forward(q, prefix, n_steps, seed)` sees the question and a prefix of the reference, NOT the answer,
  and writes up to ``n_steps`` more steps that continue the prefix. They may be wrong, and the teacher
  may stop early. Decisions on these steps are ``"proceed"`` (``"end"`` allowed on a last step the
  teacher believes finishes the problem); the composer overwrites the decision of the last one.
* `reveal(q, prefix, attempt, seed)` sees the answer (``q.answer``) and judges the attempt:
  ``reflection`` replaces the reflection of the attempt's last step (why it fails, or that it is on
  track); ``returns_to`` is the 1-based index over ``prefix + attempt`` of the step to resume from
  (0 = the question itself) -- the deepest step still on a correct line -- or None when the attempt is
  right and the line simply continues; ``steps`` continue from there to the end (the last has
  ``decision="end"``; empty when the attempt already finished correctly); ``final_answer`` is the answer
  that line reaches.

Composed record: ``prefix + attempt + steps``, where the attempt's last step gets ``reflection`` and
decision ``"backtrack"`` with ``returns_to`` (or ``"proceed"``/``"end"`` when ``returns_to`` is None).
All methods are async so LLM teachers can run many requests at once; teachers are deterministic given
``seed`` (or cache their outputs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from steiner.format import Step


@dataclass
class Question:
    """One problem to synthesise reasoning for; ``meta`` holds domain fields (numbers, target, ...)."""

    id: str
    question: str
    answer: str
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_record(cls, rec: dict) -> Question:
        """From a question record ``{"id", "question", "answer", ...}``; other keys go to ``meta``."""
        extra = {k: v for k, v in rec.items() if k not in ("id", "question", "answer")}
        return cls(id=str(rec["id"]), question=str(rec["question"]), answer=str(rec["answer"]), meta=extra)

    def record(self) -> dict:
        """The question record again (``meta`` fields at the top level), as the domain seam reads it."""
        return {**self.meta, "id": self.id, "question": self.question, "answer": self.answer}


@dataclass
class Revealed:
    """What a teacher writes once the answer is revealed after a truncated attempt (see module doc)."""

    reflection: str
    returns_to: int | None
    steps: list[Step]
    final_answer: str


@runtime_checkable
class Teacher(Protocol):
    """A writer of reasoning steps; see the module docstring for the conventions."""

    name: str

    async def reference(self, q: Question) -> tuple[list[Step], str]:
        """A full reference path and its final answer."""
        ...

    async def forward(self, q: Question, prefix: list[Step], n_steps: int, seed: int) -> list[Step]:
        """Answer hidden: continue ``prefix`` for up to ``n_steps`` steps (may go wrong, may stop early)."""
        ...

    async def reveal(self, q: Question, prefix: list[Step], attempt: list[Step], seed: int) -> Revealed:
        """Answer revealed: judge ``attempt``, say where to resume and continue to the answer."""
        ...
