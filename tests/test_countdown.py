"""Countdown domain: generator, solver, checker, step writer, step_key and the built-in teacher."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from steiner.countdown import (
    check_answer,
    expression,
    generate_problems,
    held_out_targets,
    op_step,
    parse_op,
    parse_question,
    question_text,
    solvable,
    solve,
    state_of,
    step_key,
)
from steiner.countdown.steps import (
    ordered_moves,
    pair_order,
    search_path,
    step_fails,
    step_hit,
    written_positions,
)
from steiner.countdown.teacher import BuiltinCountdownTeacher
from steiner.format import ReasoningPath, Step, parse, render
from steiner.synth.teacher import Question, Revealed, Teacher


def test_generate_problems_seeded_solvable_and_split_by_target():
    a = generate_problems(300, seed=3)
    assert a == generate_problems(300, seed=3)
    assert a != generate_problems(300, seed=4)
    held = held_out_targets((10, 100), 0.1, 0)
    assert len(held) == 9
    for p in a:
        assert 3 <= len(p["numbers"]) <= 4
        assert all(1 <= x <= 20 for x in p["numbers"]) and 10 <= p["target"] <= 100
        assert p["split"] == ("test" if p["target"] in held else "train")
        assert check_answer(p["answer"], p["numbers"], p["target"]).ok
        assert parse_question(p["question"]) == (p["numbers"], p["target"])
    assert len({(tuple(sorted(p["numbers"])), p["target"]) for p in a}) == 300
    assert 0 < sum(p["split"] == "test" for p in a) < 100
    test = generate_problems(50, seed=3, split="test")
    train = generate_problems(200, seed=3, split="train")
    assert {p["target"] for p in test} <= held
    assert not {p["target"] for p in train} & held
    five = generate_problems(20, seed=0, num_numbers=5, number_range=(1, 9), target_range=(50, 60))
    assert all(len(p["numbers"]) == 5 and 50 <= p["target"] <= 60 for p in five)


def test_number_orders_write_each_problem_in_distinct_orders_with_its_own_trace():
    from collections import Counter

    three = generate_problems(50, seed=2, num_numbers=3, number_range=(1, 12), target_range=(10, 50),
                              split="train", number_orders=3)
    problems = Counter((tuple(sorted(p["numbers"])), p["target"]) for p in three)
    assert len(problems) == 50  # n counts problems, not records
    for (nums, _t), k in problems.items():
        distinct_orders = len(set(itertools.permutations(nums)))
        assert k == min(3, distinct_orders)  # (4, 4, 4) has one order, (4, 4, 7) three
    assert len({tuple(p["numbers"]) + (p["target"],) for p in three}) == len(three)  # no order twice
    assert len({p["id"] for p in three}) == len(three)
    for p in three:
        assert parse_question(p["question"]) == (p["numbers"], p["target"])
        assert check_answer(p["answer"], p["numbers"], p["target"]).ok
    # the search follows the given order, so orders of one problem give different traces
    first = next(iter(problems))
    a, b = [p for p in three if (tuple(sorted(p["numbers"])), p["target"]) == first][:2]
    assert [s.name for s in search_path(a["numbers"], a["target"])[0]] != \
        [s.name for s in search_path(b["numbers"], b["target"])[0]]
    with pytest.raises(ValueError, match="number_orders"):
        generate_problems(3, number_orders=0)


def test_generate_problems_bad_ranges_raise():
    with pytest.raises(ValueError, match="num_numbers"):
        generate_problems(3, num_numbers=1)
    with pytest.raises(ValueError, match="could not find"):
        generate_problems(5, num_numbers=2, number_range=(1, 1), target_range=(90, 100))


def test_solver_finds_all_solutions_with_countdown_rules():
    sols = solve([3, 5, 7, 11], 24)
    assert sols
    for sol in sols:
        assert len(sol) == 3
        expr = expression([3, 5, 7, 11], sol)
        assert check_answer(expr, [3, 5, 7, 11], 24).ok, expr
        for a, op, b, c in sol:
            assert a >= b and c >= 0 and (op != "/" or a % b == 0)
    assert len({tuple(s) for s in sols}) == len(sols)  # distinct move sequences
    assert {expression([3, 5, 7, 11], s) for s in sols} == {"((11 * 7) - 5) / 3", "(11 - 5) * (7 - 3)"}
    assert not solve([1, 1], 24) and not solvable([1, 1], 24)
    assert solvable([4, 6], 24) and not solvable([4, 6], 25)
    assert solve([2, 2], 1) == [[(2, "/", 2, 1)]]
    assert solve([24], 24) == [[]]


@pytest.mark.parametrize(
    ("expr", "numbers", "target", "ok", "reason"),
    [
        ("(3 + 5) * 3", [3, 5, 3], 24, True, "ok"),
        ("7 * 7 - 25", [7, 2, 25], 24, False, "uses 7 twice"),
        ("hello", [3], 3, False, "not an expression"),
        ("3 + 5", [3, 5], 9, False, "equals 8, not 9"),
        ("7 / 2 * 2", [7, 2, 2], 7, False, "7 / 2 is not a whole number"),
        ("9 + 15", [3, 15], 24, False, "uses 9, which is not one of the numbers"),
        ("(3 + 5", [3, 5], 8, False, "not an expression"),
        ("3 / (5 - 5)", [3, 5, 5], 0, False, "divides by zero"),
        ("-3 + 27", [3, 27], 24, False, "unary minus"),
        ("Answer: (11 - 7) * (3 + 3) = 24", [11, 7, 3, 3], 24, True, "ok"),
        ("3 × 8", [3, 8], 24, True, "ok"),
        ("__import__('os')", [1], 1, False, "not an expression"),
        ("", [1], 1, False, "not an expression"),
    ],
)
def test_check_answer(expr, numbers, target, ok, reason):
    res = check_answer(expr, numbers, target)
    assert res.ok is ok
    assert reason in res.reason


def test_step_writer_compact_text_and_step_key():
    # a move that leaves three numbers says its result and the state, in the order moves go on
    s = op_step(state_of([3, 5, 7, 11]), (5, "+", 3, 8), 24, order=[3, 5, 7, 11])
    assert (s.name, s.thought, s.summary) == ("+ 1,2 in 3,5,7,11: 5+3", "5+3=8.", "5+3=8; remaining: 7,11,8")
    assert step_key(s) == "7,8,11" and parse_op(s) == (5, "+", 3, 8)
    # a move that leaves two numbers writes out every result of them, compared with the target
    s = op_step(state_of([4, 8, 7]), (8, "-", 4, 4), 39, order=[4, 8, 7])
    assert s.thought == "8-4=4. 7,4: 7+4=11 (39? no) 7-4=3 (39? no) 7*4=28 (39? no)"
    assert s.reflection == "No result is 39." and step_fails(s, 39) and step_hit(s) is None
    # ... stopping at the first hit, which the reflection names with the answer it makes (the move
    # substituted into the hit, so the final answer is a copy of it)
    s = op_step(state_of([4, 8, 7]), (8, "*", 4, 32), 39, order=[4, 8, 7])
    assert s.thought == "8*4=32. 32,7: 32+7=39 (39? yes)" and step_hit(s) == (32, "+", 7, 39)
    assert not step_fails(s, 39) and s.reflection == "32+7=39 reaches 39: (8 * 4) + 7."
    # where the result equals a number left, the move's own result is the one substituted
    s = op_step(state_of([12, 1, 3]), (12, "*", 1, 12), 36, order=[12, 1, 3])
    assert s.reflection == "12*3=36 reaches 36: (12 * 1) * 3."
    assert search_path([10, 2, 10], 22) == (search_path([10, 2, 10], 22)[0], "(10 + 2) + 10")
    # pairs go cyclically, each starting where the last ended; the name writes the op first, then the
    # pair as positions in the numbers it writes out (a fixed cycle 1,2 -> 2,3 -> 3,1, not a lookup)
    assert written_positions([4, 8, 7], 8, 7) == (2, 3) and written_positions([4, 8, 7], 7, 4) == (3, 1)
    assert written_positions([12, 2, 12], 12, 12) == (3, 1) and written_positions([4, 8, 7], 9, 4) == (0, 0)
    assert pair_order(3) == [(0, 1), (1, 2), (2, 0)]
    assert pair_order(4) == [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2), (1, 3)]
    assert [s.name for s in search_path([4, 8, 7], 36)[0]] == [
        "+ 1,2 in 4,8,7: 8+4", "- 1,2 in 4,8,7: 8-4", "* 1,2 in 4,8,7: 8*4", "/ 1,2 in 4,8,7: 8/4",
        "+ 2,3 in 4,8,7: 8+7", "- 2,3 in 4,8,7: 8-7", "* 2,3 in 4,8,7: 8*7",
        "+ 3,1 in 4,8,7: 7+4", "- 3,1 in 4,8,7: 7-4", "* 3,1 in 4,8,7: 7*4"]
    assert search_path([10, 2, 10], 22)[0][-1].reflection == "12+10=22 reaches 22: (10 + 2) + 10."
    # the key comes from the text, robust to phrasing and order; meta is only a fallback
    assert step_key(Step(summary="blah. Remaining numbers: 11, 5 and 8")) == "5,8,11"
    assert step_key(Step(thought="remaining: 9", meta={"key": "1,2"})) == "9"
    assert step_key(Step(summary="nothing", meta={"key": "1,2"})) == "1,2"
    assert step_key(Step(summary="nothing")) is None
    with pytest.raises(ValueError, match="not legal"):
        op_step(state_of([3, 5]), (7, "+", 3, 10), 24)


def test_search_path_is_depth_first_in_move_order():
    steps, answer = search_path([4, 8, 7], 39)
    # pairs in `pair_order` (4 and 8 first), + - * / each: 8+4 and 8-4 miss, 8*4 hits
    assert [s.name for s in steps] == ["+ 1,2 in 4,8,7: 8+4", "- 1,2 in 4,8,7: 8-4", "* 1,2 in 4,8,7: 8*4"]
    assert [(s.decision, s.returns_to) for s in steps] == [("backtrack", 0), ("backtrack", 0), ("end", None)]
    assert answer == "(8 * 4) + 7" and check_answer(answer, [4, 8, 7], 39).ok
    assert search_path([1, 1, 1], 50) is None
    # four numbers: a move that leaves three is abandoned only after every move after it was tried
    steps, answer = search_path([3, 8, 50, 50], 24)
    assert check_answer(answer, [3, 8, 50, 50], 24).ok
    first = steps[0]
    assert first.name == "+ 1,2 in 3,8,50,50: 8+3" and first.decision == "proceed"
    k = next(i for i, s in enumerate(steps) if s.returns_to == 0)
    children = steps[1:k + 1]
    assert all(s.decision == "backtrack" for s in children) and [s.returns_to for s in children[:-1]] == [1] * (k - 1)
    assert len(children) == len(ordered_moves([50, 50, 11]))
    assert "Every move from 50,50,11 is tried." in children[-1].reflection and children[-1].returns_to == 0


def _line_ok(q: Question, steps: list[Step], final: str) -> bool:
    path = ReasoningPath(steps, final)
    back = parse(render(path))
    return back.ok and back.steps == steps and check_answer(final, q.meta["numbers"], q.meta["target"]).ok


def test_builtin_teacher_reference_forward_reveal():
    teacher = BuiltinCountdownTeacher(seed=1)
    assert isinstance(teacher, Teacher)
    problems = generate_problems(60, seed=5)
    backtracks = corrects = 0
    for rec in problems:
        q = Question.from_record(rec)
        ref, answer = asyncio.run(teacher.reference(q))
        assert _line_ok(q, ref, answer) and ref[-1].decision == "end"
        for cut in range(len(ref)):
            prefix = ref[:cut]
            attempt = asyncio.run(teacher.forward(q, prefix, 2, seed=cut))
            assert 1 <= len(attempt) <= 2
            assert attempt == asyncio.run(teacher.forward(q, prefix, 2, seed=cut))  # seeded
            rev = asyncio.run(teacher.reveal(q, prefix, attempt, seed=cut))
            assert isinstance(rev, Revealed)
            line = prefix + attempt
            if rev.returns_to is None:
                corrects += 1
                active = line + rev.steps
                assert solvable([int(x) for x in step_key(line[-1]).split(",")], q.meta["target"])
            else:
                backtracks += 1
                assert 0 <= rev.returns_to < len(line)
                assert str(q.meta["target"]) in rev.reflection
                assert step_fails(line[-1], q.meta["target"])  # the reflection rests on what the step shows
                active = line[: rev.returns_to] + rev.steps
            assert check_answer(rev.final_answer, q.meta["numbers"], q.meta["target"]).ok
            # the active line ends at a step whose checks hit the target
            assert step_hit(active[-1]) is not None or step_key(active[-1]) == str(q.meta["target"])
            if rev.steps:
                assert rev.steps[-1].decision == "end"
    assert backtracks > 10 and corrects > 10  # the heuristic policy both fails and succeeds


def test_reveal_returns_to_the_deepest_solvable_point_and_says_only_what_the_step_shows():
    numbers = [3, 8, 50, 50]  # 50 - 50 = 0, 3 * 8 + 0 = 24; 50 + 50 leaves 3, 8, 100
    q = Question("q", question_text(numbers, 24), "", {"numbers": numbers, "target": 24})
    teacher = BuiltinCountdownTeacher(seed=0)
    first = op_step(state_of(numbers), (50, "+", 50, 100), 24, order=numbers)
    second = op_step(state_of([3, 8, 100]), (100, "*", 8, 800), 24, order=[3, 8, 100])
    assert second.thought.startswith("100*8=800. 800,3: 800+3=803 (24? no)")
    expected = 1 if solvable([3, 8, 100], 24) else 0
    rev = asyncio.run(teacher.reveal(q, [], [first, second], seed=0))
    assert rev.returns_to == expected
    assert rev.reflection == "No result is 24."
    assert check_answer(rev.final_answer, numbers, 24).ok
    with pytest.raises(ValueError, match="cannot make"):
        asyncio.run(teacher.reference(Question("u", question_text([1, 1], 24), "")))
