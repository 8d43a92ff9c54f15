"""Method two: DAGs from steps (hand-built and generated Countdown data) and sampled backtracking paths."""

from __future__ import annotations

import networkx as nx

from steiner.countdown import check_answer, generate_problems, parse_op, parse_state, state_of, step_key
from steiner.countdown.solver import apply_op, reachable, remove_pair
from steiner.countdown.steps import step_hit
from steiner.countdown.teacher import BuiltinCountdownTeacher
from steiner.format import ReasoningPath, Step, parse, render, step_from_dict, step_to_dict
from steiner.jsonl import read_jsonl
from steiner.synth.dag import SINK, SOURCE, build_dag, dag_graph
from steiner.synth.sample import domain_hooks, optimal_path, reference_paths, sample_paths
from steiner.synth.teacher import Question
from steiner.synth.truncate import synthesize_truncations


def S(label: str, decision: str = "proceed", returns_to: int | None = None, reflection: str = "ok") -> dict:
    """A step dict whose summary is its cluster key (the hand-built domain's exact key)."""
    return step_to_dict(Step(f"go {label}", f"thinking about {label}", label, reflection, decision, returns_to))


def rec(steps: list[dict], kind: str = "truncation", final: str = "42") -> dict:
    return {"question_id": "q", "question": "Q?", "answer": "42", "kind": kind, "cut": 0, "attempt": 0,
            "steps": steps, "final_answer": final, "teacher": "hand"}


def key(step: Step) -> str:
    return step.summary


# question -> A -> B -> answer (reference); A -> X -> Y dead end, back to A; question -> C -> B
RECORDS = [
    rec([S("A"), S("B", "end")], kind="reference"),
    rec([S("A"), S("X"), S("Y", "backtrack", 1, reflection="Y is hopeless"), S("B", "end")]),
    rec([S("C"), S("B", "end")]),
]


def nodes_by_key(record: dict) -> dict:
    return {n["key"] if n["key"] else n["id"]: n for n in record["nodes"]}


def test_hand_built_dag_structure_and_node_fields():
    dag = build_dag(RECORDS, key_fn=key)
    r = dag.to_record()
    assert r["source"] == SOURCE and r["sink"] == SINK
    n = nodes_by_key(r)
    assert set(n) == {"question", "answer", "A", "B", "C", "X", "Y"}
    ids = {k: v["id"] for k, v in n.items()}
    edges = {tuple(e) for e in r["edges"]}
    expected = {("question", "A"), ("A", "B"), ("B", "answer"), ("A", "X"), ("X", "Y"), ("question", "C"), ("C", "B")}
    assert edges == {(ids[u], ids[v]) for u, v in expected}
    assert (n["A"]["e_in"], n["A"]["e_out"], n["A"]["d_s"], n["A"]["d_e"]) == (1, 2, 1, 2)
    assert (n["B"]["e_in"], n["B"]["d_s"], n["B"]["d_e"]) == (2, 2, 1)
    assert n["Y"]["dead_end"] and n["Y"]["d_e"] is None and n["Y"]["d_s"] == 3
    assert n["X"]["dead_end"] and not n["A"]["dead_end"]
    assert n["answer"]["is_answer"] and not n["B"]["is_answer"] and n["question"]["d_e"] == 3
    assert n["B"]["texts"] == ["B"] and n["B"]["summary"] == "B"
    g = dag_graph(r)
    assert nx.is_directed_acyclic_graph(g) and g.nodes[ids["A"]]["d_e"] == 2


def test_a_merge_that_would_close_a_cycle_splits_the_cluster():
    recs = [rec([S("A"), S("B", "end")]), rec([S("B"), S("A", "end")])]
    dag = build_dag(recs, key_fn=key)
    assert nx.is_directed_acyclic_graph(dag.graph)
    keys = sorted(dag.graph.nodes[n]["key"] for n in dag.graph if n not in (SOURCE, SINK))
    assert keys in (["A", "A", "B"], ["A", "B", "B"])  # one cluster became two nodes
    # without keys (no embedder) every step is its own node
    assert dag.graph.number_of_nodes() == 5 and build_dag(recs).graph.number_of_nodes() == 6


def _follows_edges(dag, steps: list[Step]) -> bool:
    line = [SOURCE]
    positions = [0]
    for i, s in enumerate(steps, start=1):
        if not dag.graph.has_edge(line[-1], s.meta["node"]):
            return False
        line.append(s.meta["node"])
        positions.append(i)
        if s.decision == "backtrack":
            keep = positions.index(s.returns_to) + 1
            line, positions = line[:keep], positions[:keep]
    return dag.graph.has_edge(line[-1], SINK)


def test_sampled_paths_on_a_hand_built_dag():
    dag = build_dag(RECORDS, key_fn=key)
    paths = sample_paths(dag, 10, seed=3, explore_prob=0.7)
    assert paths == sample_paths(dag, 10, seed=3, explore_prob=0.7)
    sigs = {tuple((s["meta"]["node"], s["decision"], s["returns_to"]) for s in p["steps"]) for p in paths}
    assert len(sigs) == len(paths) == 3  # A B, C B, and A X Y(back to A) B: the teacher's own dead end
    assert any(p["num_backtracks"] for p in paths) and any(not p["num_backtracks"] for p in paths)
    for p in paths:
        steps = [step_from_dict(s) for s in p["steps"]]
        assert parse(render(ReasoningPath(steps, p["final_answer"]))).ok
        assert _follows_edges(dag, steps) and steps[-1].decision == "end"
        assert p["final_answer"] == "42" and p["source"] == "dag"
        for s in steps:
            if s.decision == "backtrack":
                # back to the branch point, the A node (step 1: every path starts there or at C)
                assert s.returns_to == 1 and s.meta["node"] in {dag.record_nodes[1][1], dag.record_nodes[1][2]}
                assert s.reflection == "Y is hopeless"  # the teacher's recorded reason, never an invented one
                assert p["steps"][s.returns_to - 1]["meta"]["node"] == dag.record_nodes[0][0]
    opt = optimal_path(dag)
    assert opt["num_backtracks"] == 0 and len(opt["steps"]) == 2 and opt["source"] == "optimal"
    ref = reference_paths(dag)
    assert len(ref) == 1 and [s["summary"] for s in ref[0]["steps"]] == ["A", "B"]
    assert all("node" in s["meta"] for s in ref[0]["steps"])


def test_generated_countdown_dags_and_paths_are_valid(tmp_path):
    problems = generate_problems(40, seed=9, num_numbers=(3, 4))
    out = tmp_path / "steps.jsonl"
    synthesize_truncations([Question.from_record(p) for p in problems], BuiltinCountdownTeacher(seed=2), out,
                           cuts=3, attempts=2, progress=False)
    records = read_jsonl(out)
    total_paths = total_backtracks = 0
    for prob in problems:
        recs = [r for r in records if r["question_id"] == prob["id"]]
        dom = domain_hooks(prob)
        dag = build_dag(recs, key_fn=dom.key_fn, answer_ok=dom.answer_ok)
        r = dag.to_record()
        numbers, target = prob["numbers"], prob["target"]
        for node in r["nodes"]:
            if node["key"]:
                state = parse_state(node["key"])
                assert node["d_s"] == len(numbers) - len(state)  # one number fewer per step
                assert node["dead_end"] == (target not in reachable(state))
        paths = sample_paths(dag, 5, seed=1, answer_fn=dom.answer_fn, reflect_fn=dom.reflect_fn)
        paths += [optimal_path(dag, answer_fn=dom.answer_fn)] + reference_paths(dag)
        for p in paths:
            steps = [step_from_dict(s) for s in p["steps"]]
            path = ReasoningPath(steps, p["final_answer"])
            assert parse(render(path)).steps == steps
            assert all(s.meta["node"] in dag.graph for s in steps)
            state = state_of(numbers)
            for s in path.active_steps():  # the active steps are legal moves ending at the target
                a, o, b, c = parse_op(s)
                rest = remove_pair(state, a, b)
                assert rest is not None and apply_op(a, o, b) == c
                state = state_of([*rest, c])
                assert step_key(s) == ",".join(map(str, state))
            hit = step_hit(path.active_steps()[-1])  # the last step's checks name the final move
            assert state == (target,) or (hit is not None and apply_op(*hit[:3]) == target)
            assert check_answer(p["final_answer"], numbers, target).ok, p["final_answer"]
            for i, s in enumerate(steps, start=1):
                if s.decision == "backtrack":
                    assert 0 <= s.returns_to < i and str(target) in s.reflection
            total_backtracks += p["num_backtracks"]
            total_paths += 1
        # the optimal path: no backtracks, one step per move (the last two numbers are one step's checks)
        assert paths[-2]["num_backtracks"] == 0 and len(paths[-2]["steps"]) == len(numbers) - 2
    assert total_backtracks / total_paths > 0.3
