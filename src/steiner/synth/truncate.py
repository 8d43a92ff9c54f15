"""Method one, random truncation: cut a reference path, let a teacher go on blind, then reveal the answer.

For each question with a reference path: pick ``cuts`` cut points (0 = from the question), hide the
answer and ask `Teacher.forward` for a few steps, then `Teacher.reveal` for the reflection, the
backtrack target and the continuation. Each composed attempt is one ``steps.jsonl`` record. Runs
async with a concurrency limit; records already in the output (by question_id, cut, attempt) are
skipped on a rerun, and every record is flushed as soon as it is written, so an interrupted run keeps
what it made.
"""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from steiner.format import FormatError, ReasoningPath, Step, step_from_dict, step_to_dict, validate
from steiner.jsonl import drop_partial_line, dump_line, read_jsonl
from steiner.synth.teacher import Question, Revealed, Teacher


@dataclass
class TruncationStats:
    """What one run did: records written, skipped (already there) and failed (with reasons)."""

    written: int = 0
    skipped: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def compose(prefix: list[Step], attempt: list[Step], revealed: Revealed, provenance: dict) -> list[Step]:
    """One record's steps: prefix, attempt (its last step judged by the reveal), continuation.

    Prefix steps keep their decisions (a reference that is a search trace backtracks inside it);
    attempt and continuation steps proceed, except as the reveal says.

    Every step is a copy whose ``meta`` gains ``provenance`` and ``part`` ("prefix", "attempt",
    "continuation"). Raises `FormatError` when the result is not a renderable path.
    """
    if not attempt:
        raise FormatError("the teacher's forward attempt is empty")

    def tagged(steps: list[Step], part: str) -> list[Step]:
        out = []
        for s in steps:
            c = copy.copy(s)
            c.meta = {**(s.meta or {}), **provenance, "part": part}
            if part != "prefix" or c.decision not in ("proceed", "backtrack"):
                # the prefix keeps the reference's own backtracks (a search trace cut mid-way)
                c.returns_to = None
                c.decision = "proceed"
            out.append(c)
        return out

    head, tried, cont = tagged(prefix, "prefix"), tagged(attempt, "attempt"), tagged(revealed.steps, "continuation")
    last = tried[-1]
    last.reflection = revealed.reflection
    if revealed.returns_to is not None:
        last.decision, last.returns_to = "backtrack", int(revealed.returns_to)
    elif not cont:
        last.decision = "end"
    if cont:
        cont[-1].decision = "end"
    steps = head + tried + cont
    validate(ReasoningPath(steps, revealed.final_answer))
    return steps


def reference_record(q: Question, steps: list[Step], final_answer: str, teacher: str) -> dict:
    """The ``steps.jsonl`` record of a reference path."""
    tagged = [Step(s.name, s.thought, s.summary, s.reflection, s.decision, s.returns_to,
                   {**(s.meta or {}), "question_id": q.id, "cut": None, "attempt": 0, "teacher": teacher,
                    "part": "reference"}) for s in steps]
    return {"question_id": q.id, "question": q.question, "answer": q.answer, "kind": "reference", "cut": None,
            "attempt": 0, "steps": [step_to_dict(s) for s in tagged], "final_answer": final_answer,
            "teacher": teacher}


def choose_cuts(question_id: str, n_steps: int, k: int, seed: int) -> list[int]:
    """``k`` distinct cut points in ``0..n_steps-1`` (all of them when ``k >= n_steps``), seeded."""
    if n_steps <= 0:
        return []
    rng = random.Random(f"cuts:{seed}:{question_id}")
    return sorted(rng.sample(range(n_steps), min(k, n_steps)))


def _attempt_seed(seed: int, cut: int, attempt: int) -> int:
    return seed * 1_000_003 + cut * 1_009 + attempt


async def _run(questions: list[Question], teacher: Teacher, out: Path, *, cuts: int, attempts: int,
               forward_steps: int, seed: int, concurrency: int, references: dict[str, tuple[list[Step], str]],
               progress: bool, close_teacher: bool = False) -> TruncationStats:
    from rich.progress import Progress

    stats = TruncationStats()
    existing = read_jsonl(out, "steps", resumable=True)
    done = {(r["question_id"], r.get("cut"), r.get("attempt", 0)) for r in existing}
    refs: dict[str, tuple[list[Step], str]] = dict(references)
    for r in existing:
        if r.get("kind") == "reference" and r["question_id"] not in refs:
            refs[r["question_id"]] = ([step_from_dict(s) for s in r["steps"]], r.get("final_answer") or "")
    drop_partial_line(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sem = asyncio.Semaphore(concurrency)
    total = len(questions) * (1 + cuts * attempts)
    with out.open("a") as fh, Progress(disable=not progress, transient=False) as bar:
        task = bar.add_task(f"truncation ({teacher.name})", total=total)

        def write(rec: dict) -> None:
            fh.write(dump_line(rec))
            fh.flush()
            stats.written += 1

        def fail(msg: str, n: int = 1) -> None:
            stats.failed += n
            stats.errors.append(msg)
            bar.advance(task, n)

        async def one(q: Question, ref: list[Step], cut: int, attempt: int) -> None:
            if (q.id, cut, attempt) in done:
                stats.skipped += 1
                bar.advance(task)
                return
            hidden = Question(q.id, q.question, "", dict(q.meta))  # forward never sees the answer
            s = _attempt_seed(seed, cut, attempt)
            try:
                async with sem:
                    tried = await teacher.forward(hidden, ref[:cut], forward_steps, s)
                async with sem:
                    revealed = await teacher.reveal(q, ref[:cut], tried, s)
                prov = {"question_id": q.id, "cut": cut, "attempt": attempt, "teacher": teacher.name}
                steps = compose(ref[:cut], tried, revealed, prov)
            except Exception as e:  # noqa: BLE001 - one bad attempt must not stop the run; rerun retries it
                fail(f"{q.id} cut {cut} attempt {attempt}: {type(e).__name__}: {e}")
                return
            write({"question_id": q.id, "question": q.question, "answer": q.answer, "kind": "truncation",
                   "cut": cut, "attempt": attempt, "steps": [step_to_dict(x) for x in steps],
                   "final_answer": revealed.final_answer, "teacher": teacher.name})
            bar.advance(task)

        async def per_question(q: Question) -> None:
            if q.id in refs:
                ref, final = refs[q.id]
                if (q.id, None, 0) not in done:
                    write(reference_record(q, ref, final, "given" if q.id in references else teacher.name))
                else:
                    stats.skipped += 1
            else:
                try:
                    async with sem:
                        ref, final = await teacher.reference(q)
                    validate(ReasoningPath(ref, final))
                except Exception as e:  # noqa: BLE001
                    fail(f"{q.id} reference: {type(e).__name__}: {e}", 1 + cuts * attempts)
                    return
                refs[q.id] = (ref, final)
                write(reference_record(q, ref, final, teacher.name))
            bar.advance(task)
            cut_points = choose_cuts(q.id, len(ref), cuts, seed)
            bar.advance(task, (cuts - len(cut_points)) * attempts)
            await asyncio.gather(*(one(q, ref, c, a) for c in cut_points for a in range(attempts)))

        try:
            await asyncio.gather(*(per_question(q) for q in questions))
        finally:
            if close_teacher and hasattr(teacher, "aclose"):
                await teacher.aclose()  # LLM clients close inside the loop that used them
    return stats


def synthesize_truncations(
    questions: Iterable[Question],
    teacher: Teacher,
    out: str | Path,
    *,
    cuts: int = 2,
    attempts: int = 1,
    forward_steps: int = 2,
    seed: int = 0,
    concurrency: int = 16,
    references: dict[str, tuple[list[Step], str]] | None = None,
    progress: bool = True,
    close_teacher: bool = False,
) -> TruncationStats:
    """Write reference and truncation records for ``questions`` to ``out`` (``steps.jsonl``), resumably.

    ``references`` maps question id -> (steps, final answer) for questions that come with their own
    reference path; other questions get one from ``teacher.reference``. ``cuts`` cut points per
    question, ``attempts`` forward attempts per cut, each of at most ``forward_steps`` steps.
    ``close_teacher`` awaits ``teacher.aclose()`` (if it has one) at the end, inside the event loop.
    """
    if cuts < 0 or attempts < 1 or forward_steps < 1 or concurrency < 1:
        raise ValueError(f"need cuts >= 0, attempts >= 1, forward_steps >= 1, concurrency >= 1; got "
                         f"cuts={cuts}, attempts={attempts}, forward_steps={forward_steps}, concurrency={concurrency}")
    return asyncio.run(_run(list(questions), teacher, Path(out), cuts=cuts, attempts=attempts,
                            forward_steps=forward_steps, seed=seed, concurrency=concurrency,
                            references=references or {}, progress=progress, close_teacher=close_teacher))
