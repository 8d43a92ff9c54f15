"""The domain seam: registry lookup from a question record, Countdown's step checker and answer grader,
the free-text default, and the one question reader."""

from __future__ import annotations

import copy
import json
import random

import pytest

from steiner.countdown import ops_steps, parse_op, step_key
from steiner.countdown.teacher import BuiltinCountdownTeacher
from steiner.domain import (
    TEXT,
    Domain,
    StepCheck,
    domain_for,
    domain_names,
    get_domain,
    read_questions,
    register,
)
from steiner.format import Step
from steiner.grading import grade_record

CD = {"id": "q", "question": "Using the numbers 4, 8, 7, make 39.", "answer": "8 * 4 + 7"}


def test_lookup_from_a_question_record():
    assert "countdown" in domain_names() and "text" in domain_names()
    assert domain_for(CD).name == "countdown"  # parsed from the question text
    assert domain_for({"question": "?", "answer": "x", "numbers": [1, 2], "target": 3}).name == "countdown"
    assert domain_for({"question": "Capital of France?", "answer": "Paris"}) is TEXT
    assert domain_for({"question": "anything", "answer": "a", "domain": "countdown"}) is get_domain("countdown")
    with pytest.raises(ValueError, match="unknown domain 'chess'; known: countdown"):
        get_domain("chess")
    with pytest.raises(ValueError, match="name other than 'text'"):
        register(Domain())


def test_a_registered_domain_is_found_and_graded(monkeypatch):
    from steiner.domain import base

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # registered for this test only
    class Parity(Domain):
        name = "parity-test"
        answer_type = "parity-test"

        def problem(self, record):
            return record.get("parity")

        def grade(self, record, answer):
            from steiner.domain import Grade

            ok = (int(answer) % 2) == record["parity"]
            return Grade(ok, answer, "correct" if ok else "wrong parity")

    register(Parity())
    rec = {"id": "p", "question": "an odd number?", "answer": "1", "parity": 1}
    assert domain_for(rec).name == "parity-test"
    assert grade_record(rec, "7").correct and not grade_record(rec, "8").correct


def test_countdown_step_checker_reasons():
    dom = get_domain("countdown")
    first, second = ops_steps([4, 8, 7], [(8, "*", 4, 32), (32, "+", 7, 39)], 39, random.Random(0))
    assert dom.check_step(CD, None, first) == StepCheck(True, "ok", "7,32")
    assert dom.check_step(CD, "7,32", second) == StepCheck(True, "ok", "39")
    # the same move from a state that lacks its numbers
    assert dom.check_step(CD, None, second).reason == "uses 32 and 7, but the numbers left are 4, 7, 8"
    assert not dom.check_step(CD, None, Step(name="think", summary="no move here")).ok
    lie = Step(name="x", summary="8 * 4 = 32; remaining: 7, 33")
    # written in the current step wording: if countdown/steps.py reads steps differently, rewrite `lie`
    assert parse_op(lie) == (8, "*", 4, 32) and step_key(lie) == "7,33"
    assert dom.check_step(CD, None, lie).reason == "claims the numbers left are 7,33, but the move leaves 7,32"
    assert dom.check_step(CD, None, Step(name="x", summary="7 - 8 = 1; remaining: 1, 4")).ok is False
    # a step that stops on a false hit (what RL at learning rate 2e-4 learned): results left out, and a
    # reflection that claims a number that is not the target, or a hit its results do not show
    cd36 = {"id": "q36", "question": "Using the numbers 4, 8, 7, make 36.", "answer": "(7 * 4) + 8"}
    stop = Step(name="4,8: 8-4", thought="8-4=4. 7,4: 7+4=11 (36? no)", summary="8-4=4; remaining: 7,4",
                reflection="7+4=11 reaches 11: 7 + (8 - 4).", decision="end")
    assert dom.check_step(cd36, None, stop).reason == "writes 1 of the 3 results of 7 and 4"
    full = "8-4=4. 7,4: 7+4=11 (36? no) 7-4=3 (36? no) 7*4=28 (36? no)"
    assert dom.check_step(cd36, None, Step(name="x", thought=full, summary=stop.summary,
                                           reflection="No result is 36.")).ok
    assert dom.check_step(cd36, None, Step(name="x", thought=full, summary=stop.summary,
                                           reflection=stop.reflection)).reason == (
        "claims to reach 11, but its results do not reach 36")
    assert dom.check_step(cd36, None, Step(name="x", thought="8-4=4.", summary=stop.summary,
                                           reflection=stop.reflection)).reason == (
        "claims to reach 11 with no result written out")
    assert "reaches 39" in first.reflection or "reaches 39" in second.reflection  # honest hits pass (above)
    # a hit whose every move is right but whose answer is not: an intermediate written as a number
    cd22 = {"id": "q22", "question": "Using the numbers 2, 12, 5, make 22.", "answer": "12 + (5 * 2)"}
    (hit,) = ops_steps([2, 12, 5], [(5, "*", 2, 10)], 22, end=False)
    assert dom.check_step(cd22, None, hit).ok and hit.reflection.endswith(": 12 + (5 * 2).")
    wrong = Step(name=hit.name, thought=hit.thought, summary=hit.summary,
                 reflection="12+10=22 reaches 22: (5 * 2) + 10.", decision="end")
    assert dom.check_step(cd22, None, wrong).reason == (
        "writes the answer (5 * 2) + 10, which uses 10, which is not one of the numbers")


def test_countdown_hooks_and_teacher():
    dom = get_domain("countdown")
    steps = ops_steps([4, 8, 7], [(8, "+", 7, 15)], 39, random.Random(0), end=False)
    assert dom.step_key(steps[0]) == "4,15"
    assert dom.dead_state(CD, steps[0]) is True  # 4 and 15 cannot make 39
    assert dom.dead_end_reflection(CD, steps[0], random.Random(0))
    assert isinstance(dom.teacher(seed=1), BuiltinCountdownTeacher)
    assert dom.answer_from_steps(CD, ops_steps([4, 8, 7], [(8, "*", 4, 32), (32, "+", 7, 39)], 39,
                                                random.Random(0))).replace(" ", "") in ("8*4+7", "(8*4)+7")


def test_text_domain_checks_nothing_and_grades_generically():
    rec = {"id": "t", "question": "Capital?", "answer": "Paris"}
    assert TEXT.step_key(Step(name="a", summary="b")) is None and TEXT.teacher() is None
    assert TEXT.check_step(rec, None, Step(name="a")).ok and not TEXT.checks_steps
    assert grade_record(rec, "The Paris.").correct
    assert grade_record({**rec, "answer": "\\frac{1}{2}"}, "0.5").correct  # a digit or LaTeX: math
    assert grade_record({"question": "?", "answer": "Paris", "choices": ["Lyon", "Paris"]}, "B").correct


def test_read_questions_errors_name_file_line_field(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text(json.dumps({"id": 1, "question": "a", "answer": "b"}) + "\n")
    assert read_questions(p) == [{"id": "1", "question": "a", "answer": "b"}]
    p.write_text(json.dumps({"id": 1, "question": "a", "answer": "b"}) + "\n" + json.dumps({"id": 2, "question": "a"}))
    with pytest.raises(ValueError, match=r"q.jsonl: line 2 has no 'answer' field"):
        read_questions(p)
    p.write_text((json.dumps({"id": 1, "question": "a", "answer": "b"}) + "\n") * 2)
    with pytest.raises(ValueError, match=r"line 2: duplicate id '1'"):
        read_questions(p)
    p.write_text("\n")
    with pytest.raises(ValueError, match="no question records"):
        read_questions(p)


def test_verify_steps_checks_each_step_from_the_state_it_continues():
    from steiner.countdown.steps import search_path
    from steiner.domain import verify_steps

    steps, _ = search_path([4, 8, 7], 39)  # 8+4 (back to 0), 8-4 (back to 0), 8*4 hits
    assert [c.ok for c in verify_steps(CD, steps)] == [True, True, True]
    # each step after a backtrack is checked from the question's numbers again, not from 12,7
    wrong = copy.deepcopy(steps)
    wrong[1].thought = wrong[1].thought.replace("7*4=28", "7*4=29")
    checks = verify_steps(CD, wrong)
    assert [c.ok for c in checks] == [True, False, True] and checks[1].reason == "7 * 4 is 28, not 29"
    assert verify_steps({"id": "t", "question": "Capital of France?", "answer": "Paris"}, steps) is None
