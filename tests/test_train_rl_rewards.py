"""Step-level rewards on a hand-built DAG: each rule, and the formula against hand-computed numbers."""

from __future__ import annotations

import json
import math

import pytest

from steiner.config import ConfigError
from steiner.format import ReasoningPath, Step
from steiner.train.rewards import Dag, StepMatcher, StepRewardConfig, load_dags, make_checker, score

# question -> A -> B -> C -> answer is the shortest line (D* = 3 steps); X (from the question) and
# Y (from A) are dead ends; B -> R -> R2 -> R3 -> answer is a longer viable detour.
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


def reward(path: ReasoningPath, cfg: StepRewardConfig = CFG, correct: bool = True):
    matches = StepMatcher(cfg, key_fn).match(path.steps, DAG)
    return score(path, correct=correct, cfg=cfg, dag=DAG, matches=matches)


def test_formula_matches_hand_computed_numbers():
    r = reward(mk(("A", "proceed"), ("B", "proceed"), ("C", "end")))
    # A: +1 progress, e_out=2 -> 0.05 ln 2; B: +1, e_out=2 -> 0.05 ln 2; C: +1
    assert r.steps == pytest.approx([1 + 0.05 * LN2, 1 + 0.05 * LN2, 1.0])
    assert r.path == pytest.approx(1.0)  # full coverage of D* = 3, no length penalty
    assert r.outcome == pytest.approx(1.2)  # correct 1.0 + format 0.2
    assert r.total == pytest.approx(3 + 0.1 * LN2 + 2.2)
    assert r.matched == 3 and r.terms == ["viable"] * 3


def test_progress_earns_more_than_regress():
    fwd = reward(mk(("A", "proceed"), ("B", "proceed"), ("C", "proceed")))
    back = reward(mk(("A", "proceed"), ("B", "proceed"), ("R", "proceed")))
    assert fwd.steps[2] == pytest.approx(1.0)
    assert back.steps[2] == pytest.approx(-1.0)  # d_e 2 -> 3: one edge away from the answer


def test_backtracked_dead_end_beats_blind_dead_end():
    explored = reward(mk(("X", "backtrack", 0), ("A", "proceed"), ("B", "proceed"), ("C", "end")))
    blind = reward(mk(("X", "proceed"), ("?", "end")))
    assert explored.steps[0] == pytest.approx(CFG.dead_end_backtracked)
    assert explored.terms[0] == "dead_end_backtracked"
    assert blind.steps[0] == pytest.approx(CFG.dead_end_blind)
    assert explored.steps[0] > blind.steps[0] and explored.total > blind.total
    # after backtracking to the question, A is anchored at the question again: full progress
    assert explored.steps[1] == pytest.approx(1 + 0.05 * LN2)


def test_dead_end_deeper_in_the_line_backtracks_to_its_parent():
    r = reward(mk(("A", "proceed"), ("Y", "backtrack", 1), ("B", "proceed"), ("C", "end")))
    assert r.steps[1] == pytest.approx(-0.1)
    assert r.steps[2] == pytest.approx(1 + 0.05 * LN2)  # anchored at A (step 1), not at Y


def test_exploring_a_dead_end_is_not_below_skipping_steps():
    explored = reward(mk(("X", "backtrack", 0), ("A", "proceed"), ("B", "proceed"), ("C", "end")))
    direct = reward(mk(("A", "proceed"), ("B", "proceed"), ("C", "end")))
    unmatched_jump = reward(mk(("?", "end")))
    jump_to_c = reward(mk(("C", "end")))
    assert direct.total - explored.total == pytest.approx(-CFG.dead_end_backtracked)
    assert explored.total > unmatched_jump.total
    assert explored.total > jump_to_c.total
    # C from the question: progress capped at 1, two skipped levels cost 2 * 0.5, coverage 1/3
    assert jump_to_c.steps == pytest.approx([0.0])
    assert jump_to_c.path == pytest.approx(1 / 3)


def test_unmatched_reward_and_repeat():
    cfg = StepRewardConfig(unmatched_reward=0.3)
    r = reward(mk(("?", "proceed"), ("A", "proceed"), ("A", "proceed")), cfg, correct=False)
    assert r.steps[0] == pytest.approx(0.3)
    assert r.steps[2] == pytest.approx(cfg.repeat_reward)
    assert r.terms == ["unmatched", "viable", "repeat"]


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
    # 6 unmatched steps for D* = 3: ratio 2, excess (2 - 1) / 1 -> capped penalty 0.5
    r = reward(mk(*[("?", "proceed")] * 5, ("?", "end")), cfg)
    assert r.path == pytest.approx(-0.5)


def test_abandoned_viable_progress_scaled():
    r = reward(mk(("A", "proceed"), ("B", "backtrack", 1), ("C", "end")))
    assert r.steps[1] == pytest.approx(0.05 * LN2)  # progress of abandoned B counts 0 by default
    cfg = StepRewardConfig(abandoned_scale=1.0)
    assert reward(mk(("A", "proceed"), ("B", "backtrack", 1)), cfg).steps[1] == pytest.approx(1 + 0.05 * LN2)


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="dead_end_blind"):
        StepRewardConfig(dead_end_blind=0.5)
    with pytest.raises(ConfigError, match="max_length_ratio"):
        StepRewardConfig(max_length_ratio=0)
    with pytest.raises(ConfigError, match="match"):
        StepMatcher(StepRewardConfig(match="key"), key_fn=None)


def test_load_dags_and_refuse_non_dag_files(tmp_path):
    p = tmp_path / "dags.jsonl"
    p.write_text(json.dumps(dag_record("q1")) + "\n" + json.dumps(dag_record("q2")) + "\n")
    dags = load_dags(p)
    assert set(dags) == {"q1", "q2"} and dags["q1"].shortest_steps == 3
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


def test_exact_match_checker():
    check = make_checker({"id": "q", "question": "?", "answer": "Paris"})
    assert check(" paris. ") and not check("Lyon")


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
