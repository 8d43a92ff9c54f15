"""The domain seam: what a domain provides, and the registry that finds the domain of a question record.

A *question record* is a dict ``{"id", "question", "answer", ...}``; extra keys are domain fields
(Countdown: ``numbers``, ``target``) or an explicit ``"domain"`` name. Every stage asks this module
about a question instead of knowing domains itself:

=====================  ====================================================  ======================
what                   method                                                used by
=====================  ====================================================  ======================
question parsing       `Domain.problem(record)` (None: not this domain)      lookup, the others
step state key         `Domain.step_key(step)`                               synth clustering, RL
step checker           `Domain.check_step(record, before, step)` ->           RL step reward
                       `StepCheck` (legal from ``before``, result right)
answer grader          `Domain.grade(record, answer)` -> `Grade`, reached     eval, RL outcome,
                       through `steiner.grading.grade_record`                 synth answer checks
answer from steps      `Domain.answer_from_steps(record, steps)`             synth sampled paths
dead-end reflection    `Domain.dead_end_reflection(record, step, rng)`       synth sampled paths
                       (only when the step's own text shows the failure)
move order             `Domain.move_order(record, parent, step)`             synth sampled paths
dead state             `Domain.dead_state(record, step)`                      synth verification
built-in teacher       `Domain.teacher(**options)` (None: bring one)          `steiner synth`
=====================  ====================================================  ======================

Domains register themselves (`register`); `domain_for(record)` returns the first registered domain
whose `problem` accepts the record, else `TEXT`, the domain of free-text questions (no step key, no
step checker, graded by the generic answer kinds of `steiner.grading`). Built-in domains are listed
by module name in `BUILTIN_DOMAINS` and imported on the first lookup, so this package imports no
domain (no import cycle: a domain imports the seam, never the other way round).
"""

from __future__ import annotations

import importlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steiner.format import Step

if TYPE_CHECKING:
    from steiner.domain.teacher import Teacher

# modules that register a domain when imported (the embedded demo domain)
BUILTIN_DOMAINS: tuple[str, ...] = ("steiner.countdown",)


@dataclass
class Grade:
    """Whether an answer is correct, what was extracted from it (the vote key for maj@k), and why."""

    correct: bool
    extracted: str | None
    reason: str


@dataclass
class StepCheck:
    """The step checker's verdict on one step: ``ok`` when the step is legal from the state it starts in
    and its result is right; ``reason`` says why not; ``state`` is the state key after the step (None
    when the domain does not track states)."""

    ok: bool
    reason: str
    state: str | None = None


class Domain:
    """A domain's answers to the questions every stage asks (see the module docstring).

    The base class is the free-text domain: nothing is parsed, no step has a key, steps are not
    checked (`check_step` says so), answers are graded by the record's generic answer kind.
    """

    name: str = "text"
    answer_type: str | None = None  # the grader kind of this domain's answers; None: the record's own kind
    checks_steps: bool = False  # whether `check_step` really checks (False: every step passes unchecked)

    def problem(self, record: dict[str, Any]) -> Any | None:
        """The domain's parse of a question record (Countdown: ``(numbers, target)``), None if not ours."""
        return None

    def step_key(self, step: Step) -> str | None:
        """The exact key of the state a step reaches (steps with one key are one DAG node), or None."""
        return None

    def check_step(self, record: dict[str, Any], before: str | None, step: Step) -> StepCheck:
        """Whether ``step`` is legal from state ``before`` (a `StepCheck.state` key; None = the question's
        starting state) and its result is right."""
        return StepCheck(True, "not checked: the text domain has no step checker")

    def grade(self, record: dict[str, Any], answer: str) -> Grade:
        """Grade an answer text of a question of this domain (only for domains with an ``answer_type``;
        the others are graded by `steiner.grading` from the record's answer kind, which never calls this)."""
        raise TypeError(f"domain {self.name!r} has no answer grader of its own; grade its questions with "
                        "steiner.grading.grade_record, which uses the record's answer kind")

    def answer_from_steps(self, record: dict[str, Any], steps: list[Step]) -> str | None:
        """The final answer the active ``steps`` reach, when the domain can say; else None."""
        return None

    def dead_end_reflection(self, record: dict[str, Any], step: Step, rng: random.Random) -> str | None:
        """A reflection saying why ``step``'s line fails, grounded in what the step itself shows (its
        written-out results); None when the step's text does not show it -- then a sampled walk may
        not abandon the step on the spot."""
        return None

    def move_order(self, record: dict[str, Any], parent: Step | None, step: Step) -> int | None:
        """The rank of ``step`` among the moves a systematic search tries after ``parent`` (None: the
        question); None when the domain has no order (walks then try successors in a seeded order)."""
        return None

    def dead_state(self, record: dict[str, Any], step: Step) -> bool | None:
        """Whether the state ``step`` reaches cannot lead to the answer (None: the domain cannot tell)."""
        return None

    def teacher(self, **options: Any) -> Teacher | None:
        """The domain's built-in offline teacher, if it has one."""
        return None


TEXT = Domain()

_REGISTRY: dict[str, Domain] = {}
_builtins_loaded = False


def register(domain: Domain) -> Domain:
    """Register ``domain`` under its name (a later registration of the same name replaces it)."""
    if not domain.name or domain.name == TEXT.name:
        raise ValueError(f"a domain needs a name other than {TEXT.name!r}, got {domain.name!r}")
    _REGISTRY[domain.name] = domain
    return domain


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in BUILTIN_DOMAINS:
            importlib.import_module(module)


def domain_names() -> list[str]:
    """Names of the registered domains (built-ins included) and ``"text"``."""
    _load_builtins()
    return [*_REGISTRY, TEXT.name]


def get_domain(name: str) -> Domain:
    """The domain registered as ``name`` (``"text"``: `TEXT`); ValueError naming the known ones."""
    _load_builtins()
    if name == TEXT.name:
        return TEXT
    if name not in _REGISTRY:
        raise ValueError(f"unknown domain {name!r}; known: {', '.join(domain_names())}")
    return _REGISTRY[name]


def domain_for(record: dict[str, Any]) -> Domain:
    """The domain of a question record: its ``"domain"`` field if set, else the first registered domain
    that parses it, else `TEXT`."""
    if not isinstance(record, dict):
        raise TypeError(f"a question record is a dict, got {type(record).__name__}")
    if record.get("domain"):
        return get_domain(str(record["domain"]))
    _load_builtins()
    for dom in _REGISTRY.values():
        if dom.problem(record) is not None:
            return dom
    return TEXT


def read_questions(path: str | Path, what: str = "questions") -> list[dict[str, Any]]:
    """Question records of a JSONL file: every line needs a non-empty ``id``, ``question`` and ``answer``
    (ids become strings and must be unique). Errors name the file, the line and the field."""
    from steiner.jsonl import iter_records

    p = Path(path)
    out: list[dict[str, Any]] = []
    ids: set[str] = set()
    for where, rec in iter_records(p, what):
        for col in ("id", "question", "answer"):
            if rec.get(col) in (None, ""):
                raise ValueError(f"{where} has no '{col}' field (a question record needs id, question, answer)")
        rec["id"] = str(rec["id"])
        if rec["id"] in ids:
            raise ValueError(f"{where}: duplicate id {rec['id']!r}")
        ids.add(rec["id"])
        out.append(rec)
    if not out:
        raise ValueError(f"{p}: no question records")
    return out


def verify_steps(record: dict[str, Any], steps: list[Step]) -> list[StepCheck] | None:
    """The domain's checker on every step, each from the state of the step it continues (after a
    backtrack: the step it returned to; the question's state at the start). None when the question's
    domain does not check steps. The eval reports the share of verified steps: for Countdown, how
    often the model's arithmetic, its copy of the numbers left and its written-out results are right."""
    dom = domain_for(record)
    if not dom.checks_steps:
        return None
    states: list[str | None] = [None]  # the state after each step on the current line
    out = []
    for step in steps:
        check = dom.check_step(record, states[-1], step)
        out.append(check)
        states.append(check.state or states[-1])
        if step.decision == "backtrack":
            keep = step.returns_to if isinstance(step.returns_to, int) else len(states) - 2
            states = states[: keep + 1]
    return out

