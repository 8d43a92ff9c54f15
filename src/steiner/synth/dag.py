"""Method two: one DAG of clustered steps per question, with e_in, e_out, d_s and d_e on every node.

Nodes are clusters of steps (`steiner.synth.cluster`); the question is the source ``"question"`` and
the correct answer the sink ``"answer"``. Every record of the question (reference and truncation
attempts) is replayed as a walk: each step adds the edge "this step followed that one" from the step
it continues (after a backtrack, the step it returned to), so abandoned branches stay as dead ends.
A merge that would close a cycle splits the cluster instead: the step becomes a new node.

This module owns the ``dags.jsonl`` schema, written (`StepDAG.to_record`, `write_dags`) and read
(`Dag.from_record`, `load_dags`) by the `Dag` / `DagNode` dataclasses below; the RL step reward reads
DAGs through them. One record per question::

    {"question_id", "question", "answer", "source": "question", "sink": "answer",
     "nodes": [{"id", "key", "summary", "texts", "is_answer", "dead_end", "e_in", "e_out", "d_s", "d_e"}],
     "edges": [[u, v], ...]}

``key`` is the domain's exact state key (None for embedding clusters and the two pseudo-nodes);
``texts`` up to three distinct member step texts (`step_text`); ``d_s``/``d_e`` the distances in
edges from the question / to the answer (``d_e`` None: the node cannot reach the answer, a dead end).
Other keys of a record are kept (`Dag.record`) and ignored.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from steiner.format import Step, step_from_dict
from steiner.synth.cluster import Embedder, KeyFn, cluster_steps, step_text

SOURCE, SINK = "question", "answer"


# --- the dags.jsonl schema --------------------------------------------------------------------------

@dataclass
class DagNode:
    """One node of a ``dags.jsonl`` record (see the module docstring for the fields)."""

    id: str
    key: str | None
    summary: str
    texts: list[str]
    is_answer: bool
    dead_end: bool
    e_in: int
    e_out: int
    d_s: int | None
    d_e: int | None

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "key": self.key, "summary": self.summary, "texts": self.texts,
                "is_answer": self.is_answer, "dead_end": self.dead_end, "e_in": self.e_in, "e_out": self.e_out,
                "d_s": self.d_s, "d_e": self.d_e}


@dataclass
class Dag:
    """One question's DAG of steps as ``dags.jsonl`` stores it: the schema's one reader and writer."""

    question_id: str
    question: str
    answer: str
    source: str
    sink: str
    nodes: dict[str, DagNode]
    edges: list[tuple[str, str]] = field(default_factory=list)
    record: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._succ: dict[str, set[str]] = {}
        for u, v in self.edges:
            self._succ.setdefault(u, set()).add(v)

    @property
    def shortest_steps(self) -> int:
        """D*: steps on a shortest question->answer path (edges minus the one into the sink), at least 1."""
        d = self.nodes[self.source].d_e
        return max(1, (d - 1) if d is not None else 1)

    def step_nodes(self) -> list[DagNode]:
        """Nodes a generated step can match: all but the question and answer pseudo-nodes."""
        return [n for n in self.nodes.values() if n.id not in (self.source, self.sink)]

    def successors(self, node_id: str) -> set[str]:
        """Ids of the nodes an edge leads to from ``node_id``."""
        return self._succ.get(node_id, set())

    def question_record(self) -> dict[str, Any]:
        """The question record this DAG was built for (``id``, ``question``, ``answer``), for the domain seam."""
        return {"id": self.question_id, "question": self.question, "answer": self.answer}

    def to_record(self) -> dict[str, Any]:
        """The ``dags.jsonl`` record."""
        return {"question_id": self.question_id, "question": self.question, "answer": self.answer,
                "source": self.source, "sink": self.sink, "nodes": [n.to_record() for n in self.nodes.values()],
                "edges": [[u, v] for u, v in self.edges]}

    @classmethod
    def from_record(cls, rec: dict[str, Any], where: str = "dags record") -> Dag:
        """Validate and read one dags.jsonl record; errors name ``where`` and the field."""
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        missing = [k for k in ("question_id", "nodes") if k not in rec]
        if missing:
            hint = ""
            if "steps" in rec:
                hint = (" (this looks like steps.jsonl or paths.jsonl; RL step rewards need the DAGs that "
                        "`steiner synth` writes to dags.jsonl)")
            raise ValueError(f"{where}: missing field(s) {missing}; not a dags.jsonl record{hint}")
        nodes: dict[str, DagNode] = {}
        for j, n in enumerate(rec["nodes"]):
            if not isinstance(n, dict) or "id" not in n:
                raise ValueError(f"{where}: nodes[{j}] has no 'id' (DAG node ids come from `steiner synth`)")
            try:
                nodes[str(n["id"])] = DagNode(
                    id=str(n["id"]), key=n.get("key"), summary=n.get("summary", ""),
                    texts=list(n.get("texts") or []), is_answer=bool(n.get("is_answer", False)),
                    dead_end=bool(n.get("dead_end", n.get("d_e") is None)), e_in=int(n.get("e_in", 0)),
                    e_out=int(n.get("e_out", 0)), d_s=n.get("d_s"), d_e=n.get("d_e"))
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}: nodes[{j}] (id {n['id']!r}): {e}") from e
        source, sink = str(rec.get("source", SOURCE)), str(rec.get("sink", SINK))
        for name, nid in (("source", source), ("sink", sink)):
            if nid not in nodes:
                raise ValueError(f"{where}: the {name} node {nid!r} is not among the nodes")
        edges = [(str(u), str(v)) for u, v in rec.get("edges", [])]
        for u, v in edges:
            if u not in nodes or v not in nodes:
                raise ValueError(f"{where}: edge [{u!r}, {v!r}] names a node that is not among the nodes")
        return cls(question_id=str(rec["question_id"]), question=rec.get("question", ""),
                   answer=str(rec.get("answer", "")), source=source, sink=sink, nodes=nodes, edges=edges, record=rec)


def load_dags(path: str | Path) -> dict[str, Dag]:
    """Read dags.jsonl into {question_id: Dag}; errors name the file, line and field."""
    from steiner.jsonl import iter_records

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"dags file {str(p)!r} does not exist; `steiner synth` writes dags.jsonl")
    dags: dict[str, Dag] = {}
    for where, rec in iter_records(p, "dags"):
        dag = Dag.from_record(rec, where=where)
        dags[dag.question_id] = dag
    if not dags:
        raise ValueError(f"{p}: no DAG records; `steiner synth` writes one per question to dags.jsonl")
    return dags


def write_dags(path: str | Path, dags: Iterable[Dag | dict[str, Any]]) -> None:
    """Write ``dags.jsonl``: each DAG (a `Dag`, or a record of one, checked by `Dag.from_record`)."""
    from steiner.jsonl import write_jsonl

    def records() -> Iterable[dict[str, Any]]:
        for i, d in enumerate(dags):
            if isinstance(d, Dag):
                yield d.to_record()
            else:
                Dag.from_record(d, where=f"DAG {i}")
                yield d

    write_jsonl(path, records())


# --- building a question's DAG ----------------------------------------------------------------------


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

    def to_dag(self, max_texts: int = 3) -> Dag:
        """The DAG in the ``dags.jsonl`` schema (`Dag`), with distances and degrees filled in."""
        ds, de = self.d_s(), self.d_e()
        nodes = {}
        for n, data in self.graph.nodes(data=True):
            members: list[Step] = data.get("members", [])
            texts = list(dict.fromkeys(step_text(s) for s in members))[:max_texts]
            summary = Counter(s.summary for s in members).most_common(1)[0][0] if members else n
            nodes[n] = DagNode(
                id=n, key=data.get("key"), summary=summary, texts=texts, is_answer=n == SINK,
                dead_end=n not in de, e_in=self.graph.in_degree(n), e_out=self.graph.out_degree(n),
                d_s=ds.get(n, 0 if n == SOURCE else -1), d_e=de.get(n))
        return Dag(self.question_id, self.question, self.answer, SOURCE, SINK, nodes, list(self.graph.edges))

    def to_record(self, max_texts: int = 3) -> dict:
        """The ``dags.jsonl`` record (the schema is in the module docstring)."""
        return self.to_dag(max_texts).to_record()


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
