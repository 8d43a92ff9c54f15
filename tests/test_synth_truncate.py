"""Method one: random truncation records, provenance, resumability, failures and the concurrency limit."""

from __future__ import annotations

import asyncio
import json

import pytest

from steiner.countdown import check_answer, generate_problems, parse_state, step_key
from steiner.countdown.steps import search_path, step_hit
from steiner.countdown.teacher import BuiltinCountdownTeacher
from steiner.format import FormatError, ReasoningPath, Step, parse, render, step_from_dict
from steiner.jsonl import read_jsonl
from steiner.synth.teacher import Question, Revealed
from steiner.synth.truncate import choose_cuts, compose, synthesize_truncations


def _questions(n: int, seed: int = 2) -> list[Question]:
    return [Question.from_record(r) for r in generate_problems(n, seed=seed)]


def _check_record(rec: dict) -> None:
    steps = [step_from_dict(s) for s in rec["steps"]]
    path = ReasoningPath(steps, rec["final_answer"])
    assert parse(render(path)).steps == steps
    for i, s in enumerate(steps, start=1):
        assert s.meta["question_id"] == rec["question_id"] and s.meta["cut"] == rec["cut"]
        assert s.meta["teacher"] == rec["teacher"] and s.meta["attempt"] == rec["attempt"]
        if s.decision == "backtrack":
            assert 0 <= s.returns_to < i


def test_truncation_records_follow_the_contract(tmp_path):
    qs = _questions(40)
    out = tmp_path / "steps.jsonl"
    stats = synthesize_truncations(qs, BuiltinCountdownTeacher(seed=0), out, cuts=2, forward_steps=2, seed=1,
                                   progress=False)
    recs = read_jsonl(out)
    assert stats.failed == 0 and stats.written == len(recs)
    refs = [r for r in recs if r["kind"] == "reference"]
    truncs = [r for r in recs if r["kind"] == "truncation"]
    assert len(refs) == 40 and refs[0]["cut"] is None
    by_q = {q.id: q for q in qs}
    n_back = 0
    for r in recs:
        assert set(r) == {"question_id", "question", "answer", "kind", "cut", "attempt", "steps", "final_answer",
                          "teacher"}
        _check_record(r)
        q = by_q[r["question_id"]]
        numbers, target = q.meta["numbers"], q.meta["target"]
        assert check_answer(r["final_answer"], numbers, target).ok
        active = ReasoningPath([step_from_dict(s) for s in r["steps"]], r["final_answer"]).active_steps()
        last = parse_state(step_key(active[-1]))
        assert last == (target,) or (len(last) == 2 and step_hit(active[-1])[3] == target)
        if r["kind"] == "truncation":
            parts = [s["meta"]["part"] for s in r["steps"]]
            assert parts[: r["cut"]] == ["prefix"] * r["cut"] and "attempt" in parts
            n_back += any(s["decision"] == "backtrack" for s in r["steps"])
    assert n_back > 5
    for q in qs:  # cuts are distinct and within the reference
        cuts = [r["cut"] for r in truncs if r["question_id"] == q.id]
        ref_steps = [r for r in refs if r["question_id"] == q.id][0]["steps"]
        assert len(cuts) == len(set(cuts)) == min(2, len(ref_steps))
    assert choose_cuts("x", 3, 2, 0) == choose_cuts("x", 3, 2, 0)
    assert choose_cuts("x", 3, 9, 0) == [0, 1, 2]


def test_rerun_skips_done_records_and_survives_a_partial_line(tmp_path):
    qs = _questions(15)
    out = tmp_path / "steps.jsonl"
    teacher = BuiltinCountdownTeacher(seed=0)
    synthesize_truncations(qs, teacher, out, cuts=2, progress=False)
    full = out.read_text().splitlines()
    # keep the first 10 lines plus half of the 11th, as an interrupted run would
    out.write_text("\n".join(full[:10]) + "\n" + full[10][: len(full[10]) // 2])
    stats = synthesize_truncations(qs, teacher, out, cuts=2, progress=False)
    assert stats.skipped == 10 and stats.written == len(full) - 10
    again = out.read_text().splitlines()
    assert sorted(again) == sorted(full)  # deterministic, nothing duplicated, nothing lost
    stats = synthesize_truncations(qs, teacher, out, cuts=2, progress=False)
    assert stats.written == 0 and stats.skipped == len(full)


class FlakyTeacher(BuiltinCountdownTeacher):
    """Fails the reveal of some questions; counts the calls in flight to check the concurrency limit."""

    def __init__(self, fail: set[str]) -> None:
        super().__init__(seed=0)
        self.fail, self.inflight, self.peak = fail, 0, 0

    async def forward(self, q, prefix, n_steps, seed):
        assert q.answer == ""  # the answer is hidden while going forward
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        await asyncio.sleep(0.002)
        self.inflight -= 1
        return await super().forward(q, prefix, n_steps, seed)

    async def reveal(self, q, prefix, attempt, seed):
        if q.id in self.fail:
            raise RuntimeError("endpoint said no")
        return await super().reveal(q, prefix, attempt, seed)


def test_failures_are_counted_and_retried_and_concurrency_is_bounded(tmp_path):
    qs = _questions(12)
    out = tmp_path / "steps.jsonl"
    flaky = FlakyTeacher({qs[0].id, qs[1].id})
    stats = synthesize_truncations(qs, flaky, out, cuts=2, concurrency=3, progress=False)
    assert 1 < flaky.peak <= 3
    # each failing question fails one attempt per cut; cuts fall on the steps of its reference search
    assert stats.failed == sum(min(2, len(search_path(q.meta["numbers"], q.meta["target"])[0])) for q in qs[:2])
    assert "endpoint said no" in stats.errors[0]
    first_failed = stats.failed
    stats = synthesize_truncations(qs, FlakyTeacher(set()), out, cuts=2, progress=False)
    assert stats.failed == 0 and stats.written == first_failed  # exactly the failed ones are retried
    done = {(r["question_id"], r["cut"]) for r in read_jsonl(out)}
    assert all((q.id, None) in done for q in qs)


def test_given_references_are_used_instead_of_the_teacher(tmp_path):
    q = _questions(1)[0]
    ref, ans = asyncio.run(BuiltinCountdownTeacher(seed=5).reference(q))
    ref[0].name = "given step"
    out = tmp_path / "s.jsonl"
    synthesize_truncations([q], BuiltinCountdownTeacher(), out, cuts=1, references={q.id: (ref, ans)},
                           progress=False)
    recs = read_jsonl(out)
    assert recs[0]["teacher"] == "given" and recs[0]["steps"][0]["name"] == "given step"


def test_compose_sets_the_decisions():
    prefix = [Step("a", "t", "s", "r", "proceed")]
    attempt = [Step("b", "t", "s", "r", "proceed"), Step("c", "t", "s", "r", "proceed")]
    cont = [Step("d", "t", "s", "r", "proceed"), Step("e", "t", "s", "r", "proceed")]
    steps = compose(prefix, attempt, Revealed("fails", 1, cont, "42"), {"cut": 1})
    assert [s.decision for s in steps] == ["proceed", "proceed", "backtrack", "proceed", "end"]
    assert steps[2].returns_to == 1 and steps[2].reflection == "fails" and attempt[1].reflection == "r"
    assert ReasoningPath(steps, "42").active_steps() == [steps[0], *steps[3:]]
    steps = compose(prefix, attempt, Revealed("fine", None, [], "42"), {"cut": 1})
    assert [s.decision for s in steps] == ["proceed", "proceed", "end"]
    with pytest.raises(FormatError):
        compose(prefix, attempt, Revealed("bad", 3, cont, "42"), {})  # not an earlier step
    with pytest.raises(FormatError, match="empty"):
        compose(prefix, [], Revealed("x", None, cont, "42"), {})
    assert json.dumps([s.meta for s in steps])
