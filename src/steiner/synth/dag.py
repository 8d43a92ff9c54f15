"""Method two: one DAG of clustered steps per question, with e_in, e_out, d_s and d_e on every node.

Nodes are clusters of steps (`steiner.synth.cluster`); the question is the source ``"question"`` and
the correct answer the sink ``"answer"``. Every record of the question (reference and truncation
attempts) is replayed as a walk: each step adds the edge "this step followed that one" from the step
it continues (after a backtrack, the step it returned to), so abandoned branches stay as dead ends.
A merge that would close a cycle splits the cluster instead: the step becomes a new node.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import networkx as nx

from steiner.format import Step, step_from_dict
from steiner.synth.cluster import Embedder, KeyFn, cluster_steps, step_text

SOURCE, SINK = "question", "answer"


@dataclass
class StepDAG:
    """A question's DAG. ``graph`` nodes carry ``key``, ``members`` (steps); ``edge_steps[(u, v)]`` are
    the steps that realised each edge, so a sampled step is always one written after its parent."""

    question_id: str
    question: str
    answer: str
    graph: nx.DiGraph
    edge_steps: dict[tuple[str, str], list[Step]] = field(default_factory=dict)
    end_answers: dict[str, Counter] = field(default_factory=dict)  # node -> final answers ending there
    record_nodes: list[list[str]] = field(default_factory=list)  # node of every step, per input record
    records: list[dict] = field(default_factory=list)

    def d_s(self) -> dict[str, int]:
        return dict(nx.single_source_shortest_path_length(self.graph, SOURCE))

    def d_e(self) -> dict[str, int]:
        if SINK not in self.graph:
            return {}
        return dict(nx.single_source_shortest_path_length(self.graph.reverse(copy=False), SINK))

    def to_record(self, max_texts: int = 3) -> dict:
        """The ``dags.jsonl`` record (see the data contract in docs/synth.md)."""
        ds, de = self.d_s(), self.d_e()
        nodes = []
        for n, data in self.graph.nodes(data=True):
            members: list[Step] = data.get("members", [])
            texts = list(dict.fromkeys(step_text(s) for s in members))[:max_texts]
            summary = Counter(s.summary for s in members).most_common(1)[0][0] if members else n
            nodes.append({
                "id": n, "key": data.get("key"), "summary": summary, "texts": texts,
                "is_answer": n == SINK, "dead_end": n not in de,
                "e_in": self.graph.in_degree(n), "e_out": self.graph.out_degree(n),
                "d_s": ds.get(n, 0 if n == SOURCE else -1), "d_e": de.get(n),
            })
        return {"question_id": self.question_id, "question": self.question, "answer": self.answer,
                "source": SOURCE, "sink": SINK, "nodes": nodes, "edges": [[u, v] for u, v in self.graph.edges]}


def build_dag(records: list[dict], *, key_fn: KeyFn | None = None, embedder: Embedder | None = None,
              threshold: float = 0.85, answer_ok: Callable[[str], bool] | None = None) -> StepDAG:
    """Build one question's DAG from its ``steps.jsonl`` records.

    ``key_fn`` gives exact cluster keys (e.g. `steiner.countdown.step_key`); keyless steps are
    clustered with ``embedder`` at cosine ``threshold`` (or stay singletons). ``answer_ok`` judges a
    record's final answer; a record whose answer fails it does not connect to the sink.
    """
    if not records:
        raise ValueError("build_dag needs at least one record")
    qid = records[0]["question_id"]
    if any(r["question_id"] != qid for r in records):
        raise ValueError(f"build_dag: records of several questions given (first {qid!r})")
    steps_per = [[step_from_dict(s) for s in r["steps"]] for r in records]
    flat = [s for steps in steps_per for s in steps]
    labels = iter(cluster_steps(flat, key_fn=key_fn, embedder=embedder, threshold=threshold))
    g = nx.DiGraph()
    g.add_node(SOURCE, key=None, members=[])
    g.add_node(SINK, key=None, members=[])
    dag = StepDAG(qid, records[0]["question"], records[0]["answer"], g, records=records)
    copies: dict[str, list[str]] = {}  # cluster label -> its nodes (more than one after splits)

    def node_for(label: str, parent: str, key: str | None) -> str:
        for n in copies.setdefault(label, []):
            if n != parent and (g.has_edge(parent, n) or not nx.has_path(g, n, parent)):
                return n
        n = f"n{g.number_of_nodes() - 2}"
        g.add_node(n, key=key, members=[], label=label)
        copies[label].append(n)
        return n

    for rec, steps in zip(records, steps_per, strict=True):
        line: list[tuple[int, str]] = [(0, SOURCE)]  # (emitted index, node) of the current line
        nodes_here: list[str] = []
        for i, step in enumerate(steps, start=1):
            label = next(labels)
            parent = line[-1][1]
            n = node_for(label, parent, key_fn(step) if key_fn else None)
            g.add_edge(parent, n)
            g.nodes[n]["members"].append(step)
            dag.edge_steps.setdefault((parent, n), []).append(step)
            nodes_here.append(n)
            line.append((i, n))
            if step.decision == "backtrack":
                if step.returns_to is None:
                    line.pop()
                else:
                    line = [(j, m) for j, m in line if j <= step.returns_to]
            elif step.decision == "end":
                final = rec.get("final_answer")
                if final is not None and (answer_ok is None or answer_ok(final)):
                    g.add_edge(n, SINK)
                    dag.end_answers.setdefault(n, Counter())[final] += 1
        dag.record_nodes.append(nodes_here)
    assert nx.is_directed_acyclic_graph(g)
    return dag


def tag_nodes(steps: list[Step], nodes: list[str]) -> list[Step]:
    """Copies of ``steps`` with ``meta["node"]`` set."""
    out = []
    for s, n in zip(steps, nodes, strict=True):
        c = copy.copy(s)
        c.meta = {**(s.meta or {}), "node": n}
        out.append(c)
    return out


def dag_graph(record: dict) -> nx.DiGraph:
    """A ``dags.jsonl`` record as a networkx DiGraph with the node fields as attributes."""
    g = nx.DiGraph()
    for node in record["nodes"]:
        g.add_node(node["id"], **{k: v for k, v in node.items() if k != "id"})
    g.add_edges_from(tuple(e) for e in record["edges"])
    return g
