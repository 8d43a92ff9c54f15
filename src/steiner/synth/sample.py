"""Sample linearised walks over a step DAG: explore dead ends, backtrack, end at the answer.

A walk starts at the question. At each node it usually takes a successor that can still reach the
answer; sometimes (``explore_prob``) it enters a dead-end branch (a successor that cannot reach the
answer) or a longer sibling, goes on for a step or two, then backtracks to the node where it branched
off: the last step of the detour gets decision "backtrack", ``returns_to`` = the emitted index of the
branch point (0 = the question), and a reflection saying why. Every step is one actually written after
its parent (`StepDAG.edge_steps`), so in an exact-key domain the active steps always form a valid
solution. Walks are seeded and deduplicated. `optimal_path` gives the shortest walk, no backtracks.

What a walk needs from the question's domain (exact step key, dead-end reflection, the answer of the
active steps, the answer check) comes through the domain seam: `domain_hooks`.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from steiner.domain import TEXT, Domain, domain_for
from steiner.format import Step, step_to_dict
from steiner.grading import grade_record
from steiner.synth.cluster import KeyFn
from steiner.synth.dag import SINK, SOURCE, StepDAG

DEAD_END = [
    "This line cannot reach the answer; go back.",
    "A dead end: nothing from here leads to the answer.",
    "This does not work out; return to an earlier step.",
]
DETOUR = [
    "This route is longer than needed; go back.",
    "There is a more direct way; return to an earlier step.",
    "This detour does not help; back up.",
]

# (step as written, its node, the DAG) -> a reflection saying why the line is abandoned
ReflectFn = Callable[[Step, str, StepDAG], "str | None"]
# (active steps, DAG) -> the final answer they reach
AnswerFn = Callable[[list[Step], StepDAG], "str | None"]


@dataclass
class DomainHooks:
    """One question's domain, as DAG building (`build_dag`: ``key_fn``, ``answer_ok``) and path sampling
    (`sample_paths`: ``reflect_fn``, ``answer_fn``) take it. None: the domain has no such hook."""

    domain: Domain
    key_fn: KeyFn | None
    reflect_fn: ReflectFn | None
    answer_fn: AnswerFn | None
    answer_ok: Callable[[str], bool]


def domain_hooks(record: dict[str, Any], seed: int = 0) -> DomainHooks:
    """The hooks of a question record's domain (`steiner.domain.domain_for`); answers are checked by the
    one grader (`steiner.grading.grade_record`); reflections are seeded by ``seed`` and the question id."""
    dom = domain_for(record)
    rng = random.Random(f"domain:{seed}:{record.get('id', record.get('question_id'))}")
    if dom is TEXT:
        return DomainHooks(dom, None, None, None, lambda ans: grade_record(record, ans).correct)
    return DomainHooks(
        dom, dom.step_key,
        reflect_fn=lambda step, node, dag: dom.dead_end_reflection(record, step, rng),
        answer_fn=lambda steps, dag: dom.answer_from_steps(record, steps),
        answer_ok=lambda ans: grade_record(record, ans).correct,
    )


def _pick_member(dag: StepDAG, u: str, v: str, decision: str, rng: random.Random) -> Step:
    members = dag.edge_steps[(u, v)]
    same = [s for s in members if s.decision == decision]
    # a proceeding step should not carry a reflection written for abandoning the line
    plain = [s for s in members if s.decision != "backtrack"]
    chosen = rng.choice(same or plain or members)
    step = copy.copy(chosen)
    step.meta = {k: v for k, v in (chosen.meta or {}).items() if k in ("key",)}
    step.meta["node"] = v
    step.decision = decision  # type: ignore[assignment]
    step.returns_to = None
    return step


def _final_answer(dag: StepDAG, active: list[Step], answer_fn: AnswerFn | None) -> str:
    if answer_fn is not None:
        ans = answer_fn(active, dag)
        if ans:
            return ans
    last = active[-1].meta.get("node") if active else None
    counts = dag.end_answers.get(last or "")
    return counts.most_common(1)[0][0] if counts else dag.answer


def walk(dag: StepDAG, rng: random.Random, *, explore_prob: float = 0.5, max_backtracks: int = 3,
         dive_prob: float = 0.5, max_dive: int = 3, reflect_fn: ReflectFn | None = None) -> list[Step] | None:
    """One walk from the question to the answer (steps with decisions), or None if the DAG has no route."""
    g = dag.graph
    de = dag.d_e()
    if SOURCE not in de:
        return None
    steps: list[Step] = []
    line: list[tuple[int, str]] = [(0, SOURCE)]  # (emitted index, node)
    backtracks = 0
    tried: dict[str, set[str]] = {}  # branch node -> detours already taken from it (never repeat one)
    while True:
        node = line[-1][1]
        succ = [s for s in g.successors(node) if s != SINK]
        good = [s for s in succ if s in de]
        done = tried.setdefault(node, set())
        dead = [s for s in succ if s not in de and s not in done]
        longer = [s for s in good if de[s] >= de[node] and s not in done]  # siblings off the shortest route
        can_end = node != SOURCE and g.has_edge(node, SINK)
        if backtracks < max_backtracks and (dead or longer) and rng.random() < explore_prob:
            branch = line[-1]
            u = rng.choice(dead) if dead else rng.choice(longer)
            done.add(u)
            detour = [(u, node)]
            # dive deeper into a dead branch for a step or two, as a real attempt would
            while (u not in de and len(detour) < max_dive and rng.random() < dive_prob
                   and any(s != SINK for s in g.successors(u))):
                nxt = rng.choice([s for s in g.successors(u) if s != SINK])
                detour.append((nxt, u))
                u = nxt
            for v, parent in detour[:-1]:
                steps.append(_pick_member(dag, parent, v, "proceed", rng))
            v, parent = detour[-1]
            last = _pick_member(dag, parent, v, "backtrack", rng)
            if v in de:
                last.reflection = rng.choice(DETOUR)
            else:
                said = [s.reflection for s in dag.edge_steps[(parent, v)] if s.decision == "backtrack"]
                custom = reflect_fn(last, v, dag) if reflect_fn is not None else None
                last.reflection = custom or (rng.choice(said) if said else rng.choice(DEAD_END))
            last.returns_to = branch[0]
            steps.append(last)
            backtracks += 1
            continue
        if can_end and (not good or rng.random() < 0.7):
            steps[-1].decision = "end"
            return steps
        if not good:
            return None
        best = [s for s in good if de[s] < de[node]]
        v = rng.choice(best if best and rng.random() < 0.8 else good)
        steps.append(_pick_member(dag, node, v, "proceed", rng))
        line.append((len(steps), v))


def _active(steps: list[Step]) -> list[Step]:
    from steiner.format import ReasoningPath

    return ReasoningPath(steps).active_steps()


def path_record(dag: StepDAG, steps: list[Step], source: str, idx: int, answer_fn: AnswerFn | None) -> dict:
    """A ``paths.jsonl`` record."""
    return {"id": f"{dag.question_id}-{source}-{idx}", "question_id": dag.question_id,
            "question": dag.question, "answer": dag.answer, "steps": [step_to_dict(s) for s in steps],
            "final_answer": _final_answer(dag, _active(steps), answer_fn), "source": source,
            "num_backtracks": sum(s.decision == "backtrack" for s in steps)}


def sample_paths(dag: StepDAG, k: int, seed: int = 0, *, explore_prob: float = 0.5, max_backtracks: int = 3,
                 dive_prob: float = 0.5, max_dive: int = 3, reflect_fn: ReflectFn | None = None,
                 answer_fn: AnswerFn | None = None, tries_per_path: int = 8) -> list[dict]:
    """Up to ``k`` distinct walks (``paths.jsonl`` records with ``source="dag"``), seeded."""
    rng = random.Random(f"sample:{seed}:{dag.question_id}")
    seen: set[tuple] = set()
    out: list[dict] = []
    for _ in range(k * tries_per_path):
        if len(out) >= k:
            break
        steps = walk(dag, rng, explore_prob=explore_prob, max_backtracks=max_backtracks, dive_prob=dive_prob,
                     max_dive=max_dive, reflect_fn=reflect_fn)
        if not steps:
            continue
        sig = tuple((s.meta["node"], s.decision, s.returns_to) for s in steps)
        if sig in seen:
            continue
        seen.add(sig)
        out.append(path_record(dag, steps, "dag", len(out), answer_fn))
    return out


def optimal_path(dag: StepDAG, seed: int = 0, answer_fn: AnswerFn | None = None) -> dict | None:
    """The shortest walk question -> answer with no backtracks (``source="optimal"``), or None."""
    import networkx as nx

    if not (SOURCE in dag.graph and SINK in dag.graph and nx.has_path(dag.graph, SOURCE, SINK)):
        return None
    rng = random.Random(f"optimal:{seed}:{dag.question_id}")
    route = nx.shortest_path(dag.graph, SOURCE, SINK)[:-1]
    steps = [_pick_member(dag, u, v, "proceed", rng) for u, v in zip(route, route[1:], strict=False)]
    if not steps:
        return None
    steps[-1].decision = "end"
    return path_record(dag, steps, "optimal", 0, answer_fn)


def reference_paths(dag: StepDAG) -> list[dict]:
    """The input records of kind "reference" as ``paths.jsonl`` records (``source="reference"``), node-tagged."""
    from steiner.format import step_from_dict
    from steiner.synth.dag import tag_nodes

    out = []
    for rec, nodes in zip(dag.records, dag.record_nodes, strict=True):
        if rec.get("kind") != "reference" or not rec.get("final_answer"):
            continue
        steps = [step_from_dict(s) for s in rec["steps"]]
        for s in steps:
            s.meta = {k: v for k, v in s.meta.items() if k == "key"}
        steps = tag_nodes(steps, nodes)
        r = path_record(dag, steps, "reference", len(out), None)
        r["final_answer"] = rec["final_answer"]
        out.append(r)
    return out
