"""`steiner compare`: is model A better than model B on the same questions, and by how much?

Reads the ``samples.jsonl`` that `steiner eval` (or `steiner demo`) wrote for each model, pools the
samples of several folders per side (e.g. a 200 x 2 evaluation and 6 more samples drawn later at another
seed), and prints each side's pass@1 and the difference A - B with a 95% bootstrap interval that
resamples questions, pairing the two sides by question (`steiner.eval.metrics.paired_bootstrap`). Every
difference in docs/demo.md was computed this way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steiner.config import ConfigError, check_range, opt
from steiner.eval.metrics import paired_bootstrap, per_question_accuracy
from steiner.jsonl import read_jsonl

SAMPLES = "samples.jsonl"


@dataclass
class CompareConfig:
    """Options of `steiner compare`."""

    a: list[str] = opt([], "evaluation folders (or samples.jsonl files) of model A; their samples are pooled")
    b: list[str] = opt([], "evaluation folders (or samples.jsonl files) of model B, the baseline")
    reps: int = opt(2000, "bootstrap resamples of the questions")
    seed: int = opt(0, "bootstrap seed")

    def __post_init__(self) -> None:
        for side in ("a", "b"):
            if not getattr(self, side):
                raise ConfigError(f"--{side}: give at least one evaluation folder")
        check_range("reps", self.reps, lo=100)


def pooled_samples(paths: list[str]) -> list[dict[str, Any]]:
    """The graded samples of several evaluation folders (or samples files), in order."""
    rows: list[dict[str, Any]] = []
    for p in map(Path, paths):
        f = p / SAMPLES if p.is_dir() else p
        if not f.is_file():
            raise FileNotFoundError(f"{p}: no {SAMPLES} (is it a `steiner eval --out` folder?)")
        rows += read_jsonl(f, "evaluation samples")
    return rows


def compare(a: list[str], b: list[str], *, reps: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Each side's pooled pass@1 and the paired difference A - B (a fraction) with its 95% CI."""
    sides: dict[str, dict[str, Any]] = {}
    accs = {}
    for side, paths in (("a", a), ("b", b)):
        samples = pooled_samples(paths)
        accs[side] = acc = per_question_accuracy(samples)
        sides[side] = {"pass@1": sum(acc.values()) / len(acc) if acc else 0.0, "questions": len(acc),
                       "samples": len(samples)}
    mean, lo, hi = paired_bootstrap(accs["a"], accs["b"], reps=reps, seed=seed)
    return {**sides, "difference": mean, "ci": [lo, hi], "shared_questions": len(set(accs["a"]) & set(accs["b"]))}


def main(cfg: CompareConfig) -> dict[str, Any]:
    """Print and return each side's pass@1 and the paired difference A - B (points, 95% CI)."""
    rep = compare(cfg.a, cfg.b, reps=cfg.reps, seed=cfg.seed)
    for side in ("a", "b"):
        s = rep[side]
        print(f"{side.upper()}: pass@1 {s['pass@1']:.4f} ({s['samples']} samples, {s['questions']} questions)")
    lo, hi = rep["ci"]
    print(f"A - B: {100 * rep['difference']:+.1f} points (95% CI {100 * lo:+.1f} to {100 * hi:+.1f}), "
          f"paired over {rep['shared_questions']} shared questions")
    return rep
