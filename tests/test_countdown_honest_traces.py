"""Issue 12: every abandon in the synthesised Countdown data is justified by what the trace shows before it.

The checker below shares no code with steiner's step writer, parser of step text or solver: it reads the
rendered fields with its own regular expressions and does its own arithmetic. A line may be abandoned
only (a) at a step that leaves two numbers and writes out every result of them, each compared with the
target and none equal to it, (b) at a step that leaves one number other than the target, (c) at a step
every legal move after which was tried (and abandoned) earlier in the same trace, or (d) at a step whose
checks show a result that does equal the target: leaving a line that works (to look further,
``past_answer_prob``) declares nothing about it.
"""

from __future__ import annotations

import itertools
import json
import re

import pytest

from steiner.synth.pipeline import SynthConfig, main


def _ops(x: int, y: int) -> dict[str, int]:
    a, b = max(x, y), min(x, y)
    out = {"+": a + b, "-": a - b, "*": a * b}
    if b and a % b == 0:
        out["/"] = a // b
    return out


def _left(step: dict) -> list[int]:
    m = re.findall(r"remaining:\s*([\d,\s]+)", step["summary"])
    assert m, f"step {step['name']!r} names no remaining numbers"
    return sorted(int(x) for x in re.findall(r"\d+", m[-1]))


def _moves(numbers: list[int]) -> set[tuple[int, ...]]:
    """Every state one legal move leaves (as sorted tuples)."""
    out = set()
    for i, j in itertools.combinations(range(len(numbers)), 2):
        rest = [numbers[k] for k in range(len(numbers)) if k not in (i, j)]
        for r in _ops(numbers[i], numbers[j]).values():
            out.add(tuple(sorted([*rest, r])))
    return out


def _shows_failure(step: dict, target: int) -> bool:
    left = _left(step)
    if len(left) == 1:
        return left[0] != target
    if len(left) != 2:
        return False
    said = {(int(a), op, int(b)): (int(r), int(t), v)
            for a, op, b, r, t, v in re.findall(r"(\d+)([-+*/])(\d+)=(\d+) \((\d+)\? (yes|no)\)", step["thought"])}
    x, y = max(left), min(left)
    for op, r in _ops(x, y).items():
        if said.get((x, op, y)) != (r, target, "no") or r == target:
            return False
    return True


def _shows_hit(step: dict, target: int) -> bool:
    left = _left(step)
    said = re.findall(r"(\d+)([-+*/])(\d+)=(\d+) \((\d+)\? yes\)", step["thought"])
    return len(left) == 2 and any(int(t) == target and int(r) == target and _ops(int(a), int(b)).get(op) == target
                                  and sorted([int(a), int(b)]) == left for a, op, b, r, t in said)


def check_path(path: dict, numbers: list[int], target: int) -> list[str]:
    """Problems of one path: each abandoned step whose failure the trace before it does not show."""
    problems = []
    stack: list[int] = [0]  # emitted indices of the active line (0 = the question)
    state = {0: sorted(numbers)}
    children: dict[int, set[tuple[int, ...]]] = {}  # step -> states of the steps tried after it
    abandoned_ok: set[int] = set()
    steps = path["steps"]
    for i, step in enumerate(steps, start=1):
        parent = stack[-1]
        state[i] = _left(step)
        children.setdefault(parent, set()).add(tuple(state[i]))
        stack.append(i)
        if step["decision"] != "backtrack":
            continue
        back = step["returns_to"]
        popped = [j for j in stack if j > back]
        stack = [j for j in stack if j <= back]
        for j in reversed(popped):  # deepest first: a parent is justified once its children are
            s = steps[j - 1]
            tried_all = _moves(state[j]) <= children.get(j, set()) and len(state[j]) > 2
            if _shows_failure(s, target) or tried_all or _shows_hit(s, target):
                abandoned_ok.add(j)
            else:
                problems.append(f"step {j} ({s['name']}) abandoned without the trace showing why")
    return problems


@pytest.mark.parametrize("num_numbers,past", [([3, 3], 0.0), ([4, 4], 0.0), ([3, 3], 0.5)])
def test_every_abandon_in_synthesised_paths_is_justified_by_the_trace(tmp_path, num_numbers, past):
    out = tmp_path / "synth"
    main(SynthConfig(out=str(out), problems=60, test_problems=0, num_numbers=num_numbers, number_range=[1, 12],
                     target_range=[10, 50], cuts=2, attempts=2, paths_per_dag=3, explore_prob=1.0,
                     max_backtracks=40, seed=3, progress=False, past_answer_prob=past))
    problems = {json.loads(line)["id"]: json.loads(line) for line in (out / "problems.jsonl").read_text().splitlines()}
    paths = [json.loads(line) for line in (out / "paths.jsonl").read_text().splitlines()]
    bad, backtracks = [], 0
    for p in paths:
        q = problems[p["question_id"]]
        bad += [f"{p['id']}: {x}" for x in check_path(p, q["numbers"], q["target"])]
        backtracks += sum(s["decision"] == "backtrack" for s in p["steps"])
    assert not bad, bad[:5]
    assert backtracks > len(paths)  # the data does search: more than one backtrack per path on average


def test_the_checker_catches_an_unjustified_abandon():
    numbers, target = [4, 8, 7], 39
    honest = {"steps": [
        {"name": "8+4", "thought": "8+4=12. 12,7: 12+7=19 (39? no) 12-7=5 (39? no) 12*7=84 (39? no)",
         "summary": "8+4=12; remaining: 12,7", "decision": "backtrack", "returns_to": 0},
        {"name": "8*4", "thought": "8*4=32. 32,7: 32+7=39 (39? yes)", "summary": "8*4=32; remaining: 32,7",
         "decision": "end", "returns_to": None}]}
    assert check_path(honest, numbers, target) == []
    # an oracle judgment: "4 and 15 cannot make 39" without writing the results out
    oracle = json.loads(json.dumps(honest))
    oracle["steps"][0].update(name="8+7", thought="8+7=15. This leaves 4 and 15, which cannot make 39.",
                              summary="8+7=15; remaining: 15,4")
    assert check_path(oracle, numbers, target) == ["step 1 (8+7) abandoned without the trace showing why"]
    # a result left out, or one computed wrong, does not justify the abandon either
    for thought in ("8+4=12. 12,7: 12+7=19 (39? no) 12*7=84 (39? no)",
                    "8+4=12. 12,7: 12+7=19 (39? no) 12-7=5 (39? no) 12*7=83 (39? no)"):
        partial = json.loads(json.dumps(honest))
        partial["steps"][0]["thought"] = thought
        assert len(check_path(partial, numbers, target)) == 1


def test_a_passed_hit_is_not_a_judgment_but_a_bogus_hit_is_caught():
    numbers, target = [4, 8, 7], 39
    hit = {"name": "8*4", "thought": "8*4=32. 32,7: 32+7=39 (39? yes)", "summary": "8*4=32; remaining: 32,7"}
    path = {"steps": [{**hit, "decision": "backtrack", "returns_to": 0},
                      {"name": "8/4", "thought": "8/4=2. 7,2: 7+2=9 (39? no) 7-2=5 (39? no) 7*2=14 (39? no)",
                       "summary": "8/4=2; remaining: 7,2", "decision": "backtrack", "returns_to": 0},
                      {**hit, "decision": "end", "returns_to": None}]}
    assert check_path(path, numbers, target) == []
    # a "yes" on a wrong sum is no hit: leaving it is an abandon nothing justifies
    bogus = json.loads(json.dumps(path))
    bogus["steps"][0].update(name="8+4", thought="8+4=12. 12,7: 12+7=39 (39? yes)", summary="8+4=12; remaining: 12,7")
    assert check_path(bogus, numbers, target) == ["step 1 (8+4) abandoned without the trace showing why"]


def test_a_search_past_a_hit_tries_the_next_move_and_comes_back():
    import random

    from steiner.countdown.steps import search_path

    numbers, target = [4, 8, 7], 39
    plain, answer = search_path(numbers, target)
    assert [s.decision for s in plain][-1] == "end" and answer == "(8 * 4) + 7"
    first_hit = len(plain)
    # always pass, always come back after the next failed move: the plain search, the hit left (backtrack
    # to the question), one more move that fails, the hit's step again, ending there
    steps, again = search_path(numbers, target, random.Random(0), past_answer_prob=1.0, return_prob=1.0)
    assert again == answer
    assert len(steps) == first_hit + 2
    assert [(s.name, s.thought) for s in steps[:first_hit]] == [(s.name, s.thought) for s in plain]
    assert (steps[first_hit - 1].decision, steps[first_hit - 1].returns_to) == ("backtrack", 0)
    assert steps[first_hit].name == "/ 1,2 in 4,8,7: 8/4" and "(39? yes)" not in steps[first_hit].thought
    assert (steps[-1].name, steps[-1].thought, steps[-1].reflection) == (plain[-1].name, plain[-1].thought,
                                                                         plain[-1].reflection)
    assert steps[-1].decision == "end"
    # never coming back early: every move from the question is tried (each later hit passed too), then the
    # last hit passed is written again
    steps, last = search_path(numbers, target, random.Random(0), past_answer_prob=1.0, return_prob=0.0)
    assert steps[-1].decision == "end" and sum(s.decision == "end" for s in steps) == 1
    assert len(steps) == 1 + len({s.name for s in steps})  # every move once, the last hit twice
    assert steps[-1].name == [s.name for s in steps[:-1] if "(39? yes)" in s.thought][-1]
    assert check_path({"steps": [{"name": s.name, "thought": s.thought, "summary": s.summary, "decision": s.decision,
                                  "returns_to": s.returns_to} for s in steps]}, numbers, target) == []


def test_an_attempt_after_every_move_was_tried_comes_back_to_the_passed_hit():
    # a search that passed its hits and tried every move from the question: a cut after the last move
    # leaves the teacher one way on, the passed hit (it used to find no move and fail the cut)
    import asyncio
    import random

    from steiner.countdown.steps import search_path
    from steiner.countdown.teacher import BuiltinCountdownTeacher
    from steiner.domain.teacher import Question

    numbers, target = [4, 8, 7], 39
    steps, answer = search_path(numbers, target, random.Random(0), past_answer_prob=1.0, return_prob=0.0)
    teacher = BuiltinCountdownTeacher(seed=0, past_answer_prob=1.0)
    q = Question("q", "Using the numbers 4, 8, 7, make 39.", answer, {"numbers": numbers, "target": target})
    hidden = Question("q", q.question, "", dict(q.meta))

    async def cut(k):
        tried = await teacher.forward(hidden, steps[:k], 3, seed=k)
        return tried, await teacher.reveal(q, steps[:k], tried, seed=k)

    tried, revealed = asyncio.run(cut(len(steps) - 1))
    assert [(s.name, s.decision) for s in tried] == [(steps[-1].name, "end")]
    assert revealed.final_answer == answer and revealed.returns_to is None
    for k in range(len(steps)):  # and every other cut of that trace gives an attempt and a reveal
        tried, revealed = asyncio.run(cut(k))
        assert tried and revealed.final_answer


def test_a_budgeted_search_passes_each_hit_before_its_budget_tries_one_more_move_and_comes_back():
    from steiner.countdown.steps import search_path

    numbers, target = [4, 8, 7], 39
    plain, answer = search_path(numbers, target)
    assert len(plain) == 3  # the hit is the third move
    # a budget the hit already meets changes nothing
    for k in (1, 2, 3):
        steps, again = search_path(numbers, target, min_steps=k)
        assert again == answer and [(s.name, s.decision) for s in steps] == [(s.name, s.decision) for s in plain]

    def moves(steps):
        return [(s.name.split(": ")[-1], s.decision, s.returns_to) for s in steps]

    # min_steps 4: the hit at step 3 is passed, the next move tried, the hit written again at step 5, the end
    steps, again = search_path(numbers, target, min_steps=4)
    assert again == answer
    assert moves(steps) == [("8+4", "backtrack", 0), ("8-4", "backtrack", 0), ("8*4", "backtrack", 0),
                            ("8/4", "backtrack", 0), ("8*4", "end", None)]
    # min_steps 6: back at step 5 is still short of the budget, so the hit is passed again, one more move
    steps, again = search_path(numbers, target, min_steps=6)
    assert again == answer
    assert moves(steps)[4:] == [("8*4", "backtrack", 0), ("8+7", "backtrack", 0), ("8*4", "end", None)]
    assert sum(s.decision == "end" for s in steps) == 1 and len(steps) >= 6
    as_dicts = [{"name": s.name, "thought": s.thought, "summary": s.summary, "decision": s.decision,
                 "returns_to": s.returns_to} for s in steps]
    assert check_path({"steps": as_dicts}, numbers, target) == []


def test_a_recheck_budget_writes_the_hit_again_until_the_budget_and_tries_nothing_more():
    from steiner.countdown.steps import search_path

    numbers, target = [4, 8, 7], 39
    plain, answer = search_path(numbers, target)
    steps, again = search_path(numbers, target, min_steps=3, budget_pass="recheck")
    assert again == answer and [s.name for s in steps] == [s.name for s in plain]  # the budget is met: as before
    # min_steps 6: the hit at step 3 is written again at 4, 5 and 6; each pass returns where the hit came from
    steps, again = search_path(numbers, target, min_steps=6, budget_pass="recheck")
    assert again == answer and len(steps) == 6
    assert [s.name for s in steps[:3]] == [s.name for s in plain]
    hit = plain[2]
    for s in steps[2:]:
        assert (s.name, s.thought, s.summary, s.reflection) == (hit.name, hit.thought, hit.summary, hit.reflection)
    assert [(s.decision, s.returns_to) for s in steps[2:]] == [("backtrack", 0)] * 3 + [("end", None)]
    as_dicts = [{"name": s.name, "thought": s.thought, "summary": s.summary, "decision": s.decision,
                 "returns_to": s.returns_to} for s in steps]
    assert check_path({"steps": as_dicts}, numbers, target) == []
    with pytest.raises(ValueError, match="budget_pass"):
        search_path(numbers, target, min_steps=4, budget_pass="again")
