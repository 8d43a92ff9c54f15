"""Step clustering: exact keys, and sentence embeddings with the real offline all-MiniLM-L6-v2 model."""

from __future__ import annotations

import time

import networkx as nx
import numpy as np
import pytest

from steiner.countdown import step_key
from steiner.format import Step, step_to_dict
from steiner.synth.cluster import Embedder, cluster_embeddings, cluster_steps
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
