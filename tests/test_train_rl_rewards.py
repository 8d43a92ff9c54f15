"""The honest step reward on hand-built DAGs: each rule against hand-computed numbers, and one regression
test per exploit of issue 12 (forged summaries, wander-and-return, unmatched steps above dead ends)."""

from __future__ import annotations

import copy
import json
import math
import random

import pytest

from steiner.config import ConfigError
from steiner.countdown import ops_steps, step_key
from steiner.format import ReasoningPath, Step
from steiner.train.rewards import (
    Dag,
    StepMatcher,
    StepRewardConfig,
    completion_reward,
    load_dags,
    make_checker,
    score,
)

# A free-text DAG (no step checker; keys are the summaries). question -> A -> B -> C -> answer is the
# shortest line (D* = 3); X (from the question) and Y (from A) are dead ends; B -> R -> R2 -> R3 ->
# answer is a longer viable route. (id, d_s, d_e, e_in, e_out, is_answer)
NODES = [
    ("question", 0, 4, 0, 2, False), ("A", 1, 3, 1, 2, False), ("B", 2, 2, 1, 2, False),
    ("C", 3, 1, 1, 1, False), ("R", 3, 3, 1, 1, False), ("R2", 4, 2, 1, 1, False),
    ("R3", 5, 1, 1, 1, False), ("X", 1, None, 1, 0, False), ("Y", 2, None, 1, 0, False),
    ("answer", 4, 0, 2, 0, True),
]
EDGES = [["question", "A"], ["question", "X"], ["A", "B"], ["A", "Y"], ["B", "C"], ["C", "answer"],
         ["B", "R"], ["R", "R2"], ["R2", "R3"], ["R3", "answer"]]


def dag_record(qid: str = "q1") -> dict:
    nodes = [{"id": i, "key": None if i in ("question", "answer") else f"k{i}", "summary": f"state {i}",
              "texts": [f"state {i}"], "is_answer": ans, "dead_end": d_e is None, "e_in": e_in,
              "e_out": e_out, "d_s": d_s, "d_e": d_e} for i, d_s, d_e, e_in, e_out, ans in NODES]
    return {"question_id": qid, "question": "Q?", "answer": "42", "source": "question", "sink": "answer",
            "nodes": nodes, "edges": EDGES}


def key_fn(step: Step) -> str | None:
    return step.summary or None


def mk(*spec: tuple[str, str] | tuple[str, str, int]) -> ReasoningPath:
    """Steps from (node-or-'?', decision[, returns_to]); a final 'end' step gets answer '42'."""
    steps = [Step(name=f"s{i}", thought="t", summary="" if s[0] == "?" else f"k{s[0]}", reflection="r",
                  decision=s[1], returns_to=s[2] if len(s) > 2 else None) for i, s in enumerate(spec)]
    return ReasoningPath(steps=steps, answer="42" if steps and steps[-1].decision == "end" else None)


DAG = Dag.from_record(dag_record())
CFG = StepRewardConfig()
LN2 = math.log(2)
B = 0.05 * LN2  # the degree bonus of A and B (e_in 1, e_out 2); C, R, R2, R3 have none (ln 1 = 0)
DIRECT_TOTAL = 3 + 2 * B + 1.0 + 1.2  # steps + path (full coverage) + outcome (correct 1.0 + format 0.2)


def reward(path: ReasoningPath, cfg: StepRewardConfig = CFG, correct: bool = True):
    matches = StepMatcher(cfg, key_fn).match(path.steps, DAG)
    return score(path, correct=correct, cfg=cfg, dag=DAG, matches=matches)


def test_formula_matches_hand_computed_numbers():
    r = reward(mk(("A", "proceed"), ("B", "proceed"), ("C", "end")))
    # each step lowers the line's d_e by one (4 -> 3 -> 2 -> 1) and is kept progress (bonus)
    assert r.steps == pytest.approx([1 + B, 1 + B, 1.0])
    assert r.path == pytest.approx(1.0)  # kept progress 4 - 1 = 3 = D*, no length penalty
    assert r.outcome == pytest.approx(1.2)
    assert r.total == pytest.approx(DIRECT_TOTAL)
    assert r.matched == 3 and r.terms == ["viable"] * 3


def test_exploit_wander_and_return_does_not_beat_the_direct_path():
    """Issue 12: A, B, C, R, R2, R3 scored 6.27 against 5.27 for A, B, C (per-step clipping)."""
    direct = reward(mk(("A", "proceed"), ("B", "proceed"), ("C", "end")))
    # R is no successor of C: R, R2, R3 are unmatched (the anchor stays C), -1.5 each
    wander = reward(mk(("A", "proceed"), ("B", "proceed"), ("C", "proceed"), ("R", "proceed"),
                       ("R2", "proceed"), ("R3", "end")))
    assert wander.terms[3:] == ["unmatched"] * 3
    assert wander.steps == pytest.approx([1 + B, 1 + B, 1.0, -1.5, -1.5, -1.5])
    assert wander.total == pytest.approx(DIRECT_TOTAL - 4.5)
    # the same detour along real edges: R costs 1 (d_e 2 -> 3), R2 and R3 win it back, no bonus
    # (their levels were reached before) except R3's first visit of level 1 (ln 1 = 0): net zero
    legit = reward(mk(("A", "proceed"), ("B", "proceed"), ("R", "proceed"), ("R2", "proceed"), ("R3", "end")))
    assert legit.steps == pytest.approx([1 + B, 1 + B, -1.0, 1.0, 1.0])
    assert legit.total == pytest.approx(direct.total)
    # going out and backtracking: R's own -1 and the return's +1 cancel on the backtracking step
    back = reward(mk(("A", "proceed"), ("B", "proceed"), ("R", "backtrack", 2), ("C", "end")))
    assert back.steps == pytest.approx([1 + B, 1 + B, 0.0, 1.0])
    assert back.total == pytest.approx(direct.total)
    for r in (wander, legit, back):
        assert r.total <= direct.total + 1e-9


def test_exploit_unmatched_step_scores_below_an_honest_dead_end():
    """Issue 12: an unmatched step scored 0, above an honest dead end (-1)."""
    dead = reward(mk(("X", "proceed")), correct=False)
    unmatched = reward(mk(("?", "proceed")), correct=False)
    assert dead.steps == pytest.approx([-1.0]) and dead.terms == ["dead_end_blind"]
    assert unmatched.steps == pytest.approx([-1.5]) and unmatched.terms == ["unmatched"]
    assert unmatched.total < dead.total
    with pytest.raises(ConfigError, match="unmatched_reward"):
        StepRewardConfig(unmatched_reward=-1.0)


def test_an_unmatched_step_does_not_move_the_anchor():
    r = reward(mk(("A", "proceed"), ("?", "proceed"), ("B", "proceed"), ("C", "end")))
    assert r.steps == pytest.approx([1 + B, -1.5, 1 + B, 1.0])


def test_jumping_to_a_non_successor_earns_nothing():
    jump = reward(mk(("C", "end")))  # C is three levels from the question, not its successor
    assert jump.terms == ["unmatched"] and jump.steps == pytest.approx([-1.5])
    assert jump.path == pytest.approx(0.0)  # no kept progress


def test_backtracked_dead_end_beats_blind_dead_end():
    explored = reward(mk(("X", "backtrack", 0), ("A", "proceed"), ("B", "proceed"), ("C", "end")))
    blind = reward(mk(("X", "proceed"), ("?", "end")))
    assert explored.steps == pytest.approx([-0.1, 1 + B, 1 + B, 1.0])
    assert explored.total == pytest.approx(DIRECT_TOTAL - 0.1)
    assert blind.steps == pytest.approx([-1.0, -1.5])
    assert explored.total > blind.total


def test_dead_end_deeper_in_the_line_backtracks_to_its_parent():
    r = reward(mk(("A", "proceed"), ("Y", "backtrack", 1), ("B", "proceed"), ("C", "end")))
    assert r.steps == pytest.approx([1 + B, -0.1, 1 + B, 1.0])  # B is anchored at A (step 1), not at Y


def test_bonus_only_on_kept_progress_and_repeats_cost():
    # B is reached, abandoned (no bonus, its +1 returned by the backtrack), then reached again: the
    # second B is kept progress (bonus) and a repeat (-0.1)
    r = reward(mk(("A", "proceed"), ("B", "backtrack", 1), ("B", "proceed"), ("C", "end")))
    assert r.steps == pytest.approx([1 + B, 0.0, 1 - 0.1 + B, 1.0])
    assert r.terms == ["viable", "viable", "repeat", "viable"]
    assert r.total == pytest.approx(DIRECT_TOTAL - 0.1)


def test_progress_telescopes_over_any_walk():
    """Whatever the detours, the progress terms sum to d_e(question) - d_e at the end of the final line."""
    walks = [
        (mk(("A", "proceed"), ("B", "proceed"), ("R", "proceed"), ("R2", "backtrack", 1), ("B", "proceed"),
            ("C", "end")), 4 - 1),
        (mk(("X", "backtrack", 0), ("A", "proceed"), ("Y", "backtrack", 0), ("A", "proceed")), 4 - 3),
        (mk(("A", "proceed"), ("B", "proceed"), ("C", "backtrack", 0)), 0),
    ]
    zero = StepRewardConfig(in_degree_bonus=0, out_degree_bonus=0, dead_end_backtracked=0, dead_end_blind=0,
                            repeat_reward=0, unmatched_reward=-1)
    for path, progress in walks:
        r = reward(path, zero)
        assert sum(r.steps) == pytest.approx(progress - r.terms.count("unmatched"))


def test_outcome_reward_added():
    path = mk(("A", "proceed"), ("B", "proceed"), ("C", "end"))
    right, wrong = reward(path, correct=True), reward(path, correct=False)
    assert right.total - wrong.total == pytest.approx(CFG.correct_reward)
    assert score(ReasoningPath(steps=[], answer="42"), correct=True, cfg=CFG).outcome == pytest.approx(1.2)


def test_format_validity_from_parse():
    from steiner.format import parse, render

    good = parse(render(mk(("A", "proceed"), ("C", "end"))))
    bad = parse(render(mk(("A", "proceed"), ("C", "end")))[:-40])
    assert score(good, correct=False, cfg=CFG).outcome == pytest.approx(0.2)
    assert score(bad, correct=False, cfg=CFG).outcome == 0.0


def test_length_penalty_beyond_ratio():
    cfg = StepRewardConfig(max_length_ratio=1.0, length_penalty=0.5)
    # 6 unmatched steps for D* = 3: ratio 2, excess (2 - 1) / 1 -> capped penalty 0.5; no coverage
    r = reward(mk(*[("?", "proceed")] * 5, ("?", "end")), cfg)
    assert r.path == pytest.approx(-0.5)


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="dead_end_blind"):
        StepRewardConfig(dead_end_blind=0.5)
    with pytest.raises(ConfigError, match="max_length_ratio"):
        StepRewardConfig(max_length_ratio=0)
    with pytest.raises(ConfigError, match="match: 'key'"):
        StepMatcher(StepRewardConfig(match="key")).match(mk(("A", "proceed")).steps, DAG)


def test_load_dags_and_refuse_non_dag_files(tmp_path):
    p = tmp_path / "dags.jsonl"
    p.write_text(json.dumps(dag_record("q1")) + "\n" + json.dumps(dag_record("q2")) + "\n")
    dags = load_dags(p)
    assert set(dags) == {"q1", "q2"} and dags["q1"].shortest_steps == 3
    assert dags["q1"].successors("B") == {"C", "R"}
    steps = tmp_path / "steps.jsonl"
    steps.write_text(json.dumps({"question_id": "q1", "steps": [], "kind": "reference"}) + "\n")
    with pytest.raises(ValueError, match=r"steps.jsonl: line 1.*dags.jsonl"):
        load_dags(steps)
    with pytest.raises(FileNotFoundError, match="steiner synth"):
        load_dags(tmp_path / "missing.jsonl")
    rec = dag_record()
    del rec["nodes"][1]["id"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rec) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl: line 1: nodes\[1\] has no 'id'"):
        load_dags(bad)


def test_checker_is_the_one_grader():
    check = make_checker({"id": "q", "question": "?", "answer": "Paris"})
    assert check(" paris. ") and check("The Paris") and not check("Lyon")


# --- Countdown: the domain's step checker --------------------------------------------------------------

CD_RECORD = {"id": "cd", "question": "Using the numbers 4, 8, 7, make 39.", "answer": "8 * 4 + 7",
             "numbers": [4, 8, 7], "target": 39}


def countdown_dag() -> Dag:
    # question (4, 7, 8) -> "7,32" (8 * 4) -> "39" (32 + 7) -> answer; "4,15" (8 + 7) is a dead end
    nodes = [("question", None, 0, 3, 0, 2), ("n0", "7,32", 1, 2, 1, 1), ("n1", "39", 2, 1, 1, 1),
             ("n2", "4,15", 1, None, 1, 0), ("answer", None, 3, 0, 1, 0)]
    return Dag.from_record({
        "question_id": "cd", "question": CD_RECORD["question"], "answer": CD_RECORD["answer"],
        "nodes": [{"id": i, "key": k, "d_s": ds, "d_e": de, "e_in": ei, "e_out": eo, "is_answer": i == "answer"}
                  for i, k, ds, de, ei, eo in nodes],
        "edges": [["question", "n0"], ["question", "n2"], ["n0", "n1"], ["n1", "answer"]]})


def genuine() -> list[Step]:
    return ops_steps([4, 8, 7], [(8, "*", 4, 32), (32, "+", 7, 39)], 39, random.Random(0))


def test_exploit_forged_summaries_earn_nothing():
    """Issue 12: rewriting every summary of a real path as "1 + 1 = 7. remaining: X" earned full step rewards."""
    dag = countdown_dag()
    real = completion_reward(CD_RECORD, dag, ReasoningPath(genuine(), "8 * 4 + 7"), CFG)
    assert real.terms == ["viable", "viable"] and real.steps == pytest.approx([1.0, 1.0])
    assert real.path == pytest.approx(1.0) and real.outcome == pytest.approx(1.2) and real.correct
    forged = []
    for s in genuine():
        f = copy.copy(s)
        f.summary = f.thought = f"1 + 1 = 7. remaining: {', '.join(step_key(s).split(','))}"
        assert step_key(f) == step_key(s)  # the forgery claims the real state (else update the forgery)
        forged.append(f)
    fake = completion_reward(CD_RECORD, dag, ReasoningPath(forged, "8 * 4 + 7"), CFG)
    assert fake.terms == ["invalid", "invalid"] and fake.steps == pytest.approx([-1.5, -1.5])
    assert "uses 1 and 1" in fake.reasons[0]
    assert fake.path == pytest.approx(0.0) and fake.matched == 0
    assert fake.total == pytest.approx(-3.0 + 1.2) and real.total == pytest.approx(4.2)


def test_countdown_wrong_arithmetic_and_wrong_state_are_invalid_and_dead_ends_honest():
    dag = countdown_dag()
    first = genuine()[0]
    wrong = copy.copy(first)
    wrong.summary = wrong.thought = first.summary.replace("=32", "=31").replace("32,7", "31,7")
    r = completion_reward(CD_RECORD, dag, ReasoningPath([wrong]), CFG)
    assert r.terms == ["invalid"] and r.reasons == ["8 * 4 is 32, not 31"]
    dead = ops_steps([4, 8, 7], [(8, "+", 7, 15)], 39, random.Random(0), end=False)
    r = completion_reward(CD_RECORD, dag, ReasoningPath(dead), CFG)
    assert r.terms == ["dead_end_blind"] and r.steps == pytest.approx([-1.0])
    # the second move checked from the dead end's state (4, 15), not the question's: 32 + 7 is illegal there
    r = completion_reward(CD_RECORD, dag, ReasoningPath(dead + genuine()[1:]), CFG)
    assert r.terms == ["dead_end_blind", "invalid"] and "numbers left are 4, 15" in r.reasons[1]


def test_embedding_matching_with_bundled_minilm():
    rec = dag_record()
    rec["nodes"][1]["texts"] = ["Add 3 and 5 to get 8; the numbers left are 7, 8 and 11."]
    rec["nodes"][2]["texts"] = ["Multiply 8 by 3 to reach the target 24."]
    dag = Dag.from_record(rec)
    matcher = StepMatcher(StepRewardConfig(match="embedding", similarity_threshold=0.6))
    steps = [Step(name="Add", summary="Adding 3 and 5 gives 8, leaving 7, 8 and 11."),
             Step(name="Multiply", summary="8 times 3 is 24, the target."),
             Step(name="Weather", summary="It is sunny in Paris and the cafe is open.")]
    assert matcher.match(steps, dag) == ["A", "B", None]
    # only successors of the anchor can match: B's text from the question is not B
    assert matcher.match(steps[1:2], dag) == [None]
