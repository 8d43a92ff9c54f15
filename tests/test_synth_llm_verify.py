"""Answer checks of step records (`steiner.synth.verify`): the one grader, backtracks that must be
real, approved attempts that must be right, no citing of the given answer."""

from __future__ import annotations

import pytest

from steiner.format import Step, step_to_dict
from steiner.synth.verify import Verifier, cites_answer

CD = {"id": "c1", "question": "Use 2, 3, 4 to make 24.", "answer": "2*3*4", "numbers": [2, 3, 4], "target": 24}


def _step(summary: str, part: str, decision: str = "proceed", returns_to: int | None = None, **meta) -> dict:
    return step_to_dict(Step(summary, summary, summary, "r", decision, returns_to, {"part": part, **meta}))


def _trunc(attempt: list[dict], cont: list[dict], final: str, prefix: list[dict] | None = None) -> dict:
    return {"question_id": "c1", "kind": "truncation", "cut": 0, "attempt": 0,
            "steps": (prefix or []) + attempt + cont, "final_answer": final}


GOOD = [_step("3 * 2 = 6; remaining: 4, 6", "continuation"), _step("6 * 4 = 24; remaining: 24", "continuation", "end")]


def test_countdown_records_by_the_domain_grader_and_dead_states():
    v = Verifier(CD)
    assert v.kind == "countdown"
    ref = {"kind": "reference", "steps": GOOD, "final_answer": "(3*2)*4"}
    assert v.check(ref).outcome == "reference_ok"
    assert v.check({**ref, "final_answer": "2+3+4"}).outcome == "reference_wrong"
    dead = _step("2 + 3 = 5; remaining: 4, 5", "attempt", "backtrack", 0)
    alive = _step("3 * 2 = 6; remaining: 4, 6", "attempt", "backtrack", 0)
    assert v.check(_trunc([dead], GOOD, "2*3*4")).outcome == "backtrack_verified"
    verdict = v.check(_trunc([alive], GOOD, "2*3*4"))
    assert (verdict.keep, verdict.outcome) == (False, "backtrack_from_right")
    assert "can still reach" in verdict.detail
    approved_dead = _step("2 + 3 = 5; remaining: 4, 5", "attempt")
    assert v.check(_trunc([approved_dead], GOOD[1:], "2*3*4")).outcome == "approved_wrong"
    assert v.check(_trunc([dead], GOOD, "2+3+4")).outcome == "continuation_wrong"


def test_text_records_claimed_answers_and_unverifiable_backtracks():
    q = {"id": "t", "question": "What is 1/2 + 1/3?", "answer": "\\frac{5}{6}"}
    v = Verifier(q)
    cont = [_step("The sum is 5/6.", "continuation", "end")]
    wrong_claim = _step("So it is 2/5.", "attempt", "backtrack", 0, claimed_answer="2/5")
    right_claim = _step("So it is 5/6.", "attempt", "backtrack", 0, claimed_answer="\\frac{5}{6}")
    no_claim = _step("Add the tops: 2.", "attempt", "backtrack", 0)
    assert v.check(_trunc([wrong_claim], cont, "5/6")).outcome == "backtrack_verified"
    assert v.check(_trunc([right_claim], cont, "5/6")).outcome == "backtrack_from_right"
    unverifiable = v.check(_trunc([no_claim], cont, "5/6"))
    assert (unverifiable.keep, unverifiable.outcome, unverifiable.mark) == (True, "backtrack_unverifiable", "unverifiable")
    approved_wrong = _step("So it is 2/5.", "attempt", claimed_answer="2/5")
    assert v.check(_trunc([approved_wrong], cont, "5/6")).outcome == "approved_wrong"
    assert v.check(_trunc([_step("Common denominator 6.", "attempt")], cont, "5/6")).outcome == "approved"
    assert v.check(_trunc([no_claim], cont, "0.8")).outcome == "continuation_wrong"
    assert v.correct("3.3") is False and v.correct("\\dfrac{10}{12}") is True  # bare LaTeX: math-verify


def test_multiple_choice_gold_as_text_or_letter():
    v = Verifier({"id": "m", "question": "Most of the air?", "answer": "nitrogen", "choices": ["oxygen", "nitrogen"]})
    assert v.kind == "choice" and v.correct("(B)") and v.correct("The answer is B.") and not v.correct("A")


@pytest.mark.parametrize("text", [
    "This matches the given answer of 8.", "so the correct answer is 5/6", "As the revealed answer says, 12.",
    "The answer was given as 3, so", "Checking against the answer key", "与给定答案一致。", "正确答案是 40。",
    "which agrees with the expected result"])
def test_citing_the_given_answer_is_found(text):
    assert cites_answer(text)


@pytest.mark.parametrize("text", ["So the answer is 8.", "The change is 8 dollars.", "We reach the target 24.",
                                  "The correct approach is to multiply.", "答案是 40。"])
def test_deriving_an_answer_is_not_citing(text):
    assert cites_answer(text) is None


def test_a_record_that_cites_the_answer_is_rejected_naming_the_step():
    v = Verifier({"id": "t", "question": "2 + 2?", "answer": "4"})
    rec = {"kind": "reference", "final_answer": "4",
           "steps": [_step("2 + 2 = 4.", "reference"), step_to_dict(Step("c", "That matches the given answer.",
                                                                        "4", "ok", "end"))]}
    verdict = v.check(rec)
    assert (verdict.keep, verdict.outcome) == (False, "cites_answer")
    assert verdict.detail == "step 2 thought: 'the given answer'"
