"""Step clustering: exact keys, and sentence embeddings with the real offline all-MiniLM-L6-v2 model."""

from __future__ import annotations

import time

import networkx as nx
import numpy as np
import pytest

from steiner.countdown import step_key
from steiner.format import Step, step_to_dict
from steiner.synth.cluster import Embedder, cluster_embeddings, cluster_steps, mark_dead_ends, step_values
from steiner.synth.dag import build_dag


def test_cluster_by_key_and_singletons_without_embedder():
    steps = [Step(summary="3 + 5 = 8; remaining: 8, 7"), Step(summary="Computed 5 + 3 = 8, remaining: 7, 8"),
             Step(summary="free text"), Step(summary="more free text")]
    assert cluster_steps(steps, key_fn=step_key) == ["k:7,8", "k:7,8", "s:2", "s:3"]


def test_cluster_embeddings_threshold_on_vectors():
    v = np.array([[1, 0, 0], [0.99, 0.05, 0], [0, 1, 0], [0, 0.98, 0.1], [0, 0, 1]], dtype=float)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    assert cluster_embeddings(v, 0.9) == [0, 0, 1, 1, 2]
    assert cluster_embeddings(v, 0.0) == [0, 0, 0, 0, 0]
    assert cluster_embeddings(v[:1], 0.9) == [0] and cluster_embeddings(v[:0], 0.9) == []


@pytest.mark.slow  # ~20 s on 2 shared cores, mostly loading sentence-transformers and the model
def test_real_offline_model_merges_paraphrases():
    emb = Embedder()
    texts = [
        "Factor the quadratic x^2 - 5x + 6 into (x - 2)(x - 3).",
        "The quadratic x^2 - 5x + 6 factors as (x - 2)(x - 3).",
        "Compute the area of the circle: pi times the radius squared.",
        "The circle's area is pi multiplied by the square of its radius.",
        "The capital of France is Paris.",
    ]
    t0 = time.time()
    vecs = emb.encode(texts)
    assert vecs.shape == (5, 384) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
    labels = cluster_embeddings(vecs, 0.7)
    assert labels[0] == labels[1] and labels[2] == labels[3]
    assert len({labels[0], labels[2], labels[4]}) == 3
    # the same clustering drives a DAG of free-text steps: paraphrased steps become one node
    recs = [{"question_id": "q", "question": "Solve x^2 - 5x + 6 = 0", "answer": "2, 3", "steps": [
        step_to_dict(Step("factor", texts[i], texts[i], "ok", "proceed")),
        step_to_dict(Step("roots", "So x = 2 or x = 3.", "The roots are x = 2 and x = 3.", "done", "end"))],
        "final_answer": "2, 3"} for i in (0, 1)]
    dag = build_dag(recs, embedder=emb, threshold=0.7)
    assert dag.graph.number_of_nodes() == 4 and nx.is_directed_acyclic_graph(dag.graph)
    assert len(dag.to_record()["nodes"][2]["texts"]) == 2
    assert time.time() - t0 < 120


class SameVector:
    """An embedder that calls every text the same (cosine 1): only value safety can keep steps apart."""

    def encode(self, texts):
        return np.ones((len(texts), 4), dtype=np.float32) / 2


@pytest.mark.parametrize(("a", "b", "same"), [
    ("x = 3", "x = -3", False), ("So x=-3.", "Thus x = -3", True), ("The pens cost 12 dollars.", "cost 7", False),
    ("1/6", "5/6", False), ("1/2", "0.50", True), (r"$\frac{1}{6}$", "1/6", True), ("20 - 12 = 8", "8 = 20 - 12", True),
    ("1,000 dollars", "1000 dollars", True), ("3 apples", "3 apples and 3 pears", False),
])
def test_step_values(a, b, same):
    assert (step_values(a) == step_values(b)) is same


def test_value_safe_clustering_never_merges_different_values_or_dead_ends():
    texts = ["The pens cost 12 dollars.", "The pens cost 7 dollars.", "Together the pens cost 12 dollars.",
             "So x = 3.", "So x = -3.", "The probability is 1/6.", "The probability is 5/6."]
    steps = [Step(summary=t) for t in texts]
    labels = cluster_steps(steps, embedder=SameVector(), threshold=0.85)
    assert labels[0] == labels[2] and len(set(labels)) == 6
    assert len(set(cluster_steps(steps, embedder=SameVector(), threshold=0.85, value_safe=False))) == 1
    # a step of an abandoned attempt never joins a live step, even with the same text
    dead = Step(summary="The pens cost 12 dollars.", meta={"dead_end": True})
    labels = cluster_steps([steps[0], dead, Step(summary="Pens: 12 dollars.", meta={"dead_end": True})],
                           embedder=SameVector())
    assert labels[0] != labels[1] and labels[1] == labels[2]


def test_mark_dead_ends_marks_only_abandoned_attempt_steps():
    def d(summary, part, decision="proceed", returns_to=None):
        return step_to_dict(Step("n", "t", summary, "r", decision, returns_to, {"part": part}))

    rec = {"steps": [d("a", "prefix"), d("b", "attempt"), d("c", "attempt", "backtrack", 1), d("e", "continuation"),
                     d("f", "continuation", "end")]}
    ok = {"steps": [d("a", "prefix"), d("b", "attempt"), d("f", "continuation", "end")]}
    mark_dead_ends([rec, ok])
    assert [bool(s["meta"].get("dead_end")) for s in rec["steps"]] == [False, True, True, False, False]
    assert not any(s["meta"].get("dead_end") for s in ok["steps"])


@pytest.mark.slow  # loads the real MiniLM (~20 s on 2 shared cores)
def test_real_model_scores_different_values_as_similar_but_they_stay_apart():
    emb = Embedder()
    texts = ["The pens cost 12 dollars.", "The pens cost 7 dollars.", "Together the pens cost 12 dollars.",
             "So x = 3.", "So x = -3.", "The probability is 1/6.", "The probability is 5/6."]
    v = emb.encode(texts)
    for i, j in [(0, 1), (3, 4), (5, 6)]:  # topic, not value: above the 0.85 threshold
        assert float(v[i] @ v[j]) > 0.85
    steps = [Step(summary=t) for t in texts]
    labels = cluster_steps(steps, embedder=emb, threshold=0.85)
    assert labels[0] == labels[2] and len(set(labels)) == 6
    blind = cluster_steps(steps, embedder=emb, threshold=0.85, value_safe=False)
    assert blind[0] == blind[1] and blind[3] == blind[4]  # what value safety prevents
