"""Metrics over graded samples: pass@1, unbiased pass@k, maj@k over all n, format and length statistics.

A sample record (one line of ``samples.jsonl``, see `steiner.eval.runner`) carries at least
``question_id``, ``sample``, ``correct``, ``extracted``, ``failed`` and, when known,
``format_ok``, ``reasoning_tokens``, ``num_steps``, ``num_backtracks``. A failed request counts as a
sample that is not correct: it is in every denominator and never in a numerator.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from statistics import fmean
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), the chance that k of the n samples,
    drawn without replacement, hold at least one correct one."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # the product form avoids huge binomials: C(n-c, k)/C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i)
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def majority_vote(answers: list[str | None]) -> str | None:
    """The most frequent non-None answer; a tie goes to the answer seen first (deterministic)."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return None
    first = {}
    for i, a in enumerate(answers):
        if a is not None and a not in first:
            first[a] = i
    return max(votes, key=lambda a: (votes[a], -first[a]))


def default_ks(n: int) -> list[int]:
    """1, the powers of two below n, and n."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def question_stats(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-question numbers: n, correct count, majority answer (over ALL n samples) and whether it is correct."""
    samples = sorted(samples, key=lambda s: s["sample"])
    extracted = [None if s.get("failed") else s.get("extracted") for s in samples]
    majority = majority_vote(extracted)
    correct_keys = {s.get("extracted") for s in samples if s.get("correct") and not s.get("failed")}
    return {
        "n": len(samples),
        "num_correct": sum(bool(s.get("correct")) and not s.get("failed") for s in samples),
        "num_failed": sum(bool(s.get("failed")) for s in samples),
        "majority": majority,
        "majority_correct": majority is not None and majority in correct_keys,
    }


def _mean(values: Iterable[float | int | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return fmean(vals) if vals else None


def summarize(samples: list[dict[str, Any]], ks: list[int] | None = None) -> dict[str, Any]:
    """Aggregate samples into the report's metrics.

    pass@1 is the mean accuracy over all samples of all questions; pass@k the mean over questions of
    the unbiased estimator; maj@n the fraction of questions whose majority answer over all n samples
    is correct. Questions with fewer samples than k are left out of pass@k (their n is reported).
    Format validity, reasoning tokens, steps and backtracks are means over non-failed samples.
    """
    by_q: dict[str, list[dict]] = defaultdict(list)
    for s in samples:
        by_q[str(s["question_id"])].append(s)
    if not by_q:
        return {"num_questions": 0, "num_samples": 0}
    per_q = {qid: question_stats(ss) for qid, ss in by_q.items()}
    n = min(q["n"] for q in per_q.values())
    ks = sorted({k for k in (ks or default_ks(n)) if 1 <= k <= n})
    ok = [s for s in samples if not s.get("failed")]
    out: dict[str, Any] = {
        "num_questions": len(per_q),
        "num_samples": len(samples),
        "n": n,
        "num_failed": len(samples) - len(ok),
        "accuracy": fmean(q["num_correct"] / q["n"] for q in per_q.values()),
    }
    out["pass@1"] = out["accuracy"]
    for k in ks:
        if k > 1:
            out[f"pass@{k}"] = fmean(pass_at_k(q["n"], q["num_correct"], k) for q in per_q.values())
    out[f"maj@{n}"] = fmean(q["majority_correct"] for q in per_q.values())
    out["format_valid"] = _mean(s.get("format_ok") for s in ok)
    out["answered"] = fmean(s.get("extracted") is not None for s in samples)
    out["mean_reasoning_tokens"] = _mean(s.get("reasoning_tokens") for s in ok)
    out["mean_completion_tokens"] = _mean(s.get("completion_tokens") for s in ok)
    out["mean_steps"] = _mean(s.get("num_steps") for s in ok)
    out["mean_backtracks"] = _mean(s.get("num_backtracks") for s in ok)
    verified = _mean(s.get("steps_verified") for s in ok)
    if verified is not None:  # share of steps the domain's checker accepts (Countdown: arithmetic and state)
        out["steps_verified"] = verified
    return out


def per_question(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per question (in first-seen order): id, gold answer, counts and the majority answer."""
    by_q: dict[str, list[dict]] = defaultdict(list)
    for s in samples:
        by_q[str(s["question_id"])].append(s)
    rows = []
    for qid, ss in by_q.items():
        rows.append({"id": qid, "gold": ss[0].get("gold"), **question_stats(ss)})
    return rows


def per_question_accuracy(samples: list[dict[str, Any]]) -> dict[str, float]:
    """Each question's share of correct samples."""
    by_q: dict[str, list[bool]] = defaultdict(list)
    for s in samples:
        by_q[str(s["question_id"])].append(bool(s.get("correct")))
    return {q: sum(v) / len(v) for q, v in by_q.items()}


def paired_bootstrap(a: dict[str, float], b: dict[str, float], reps: int = 2000,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` over the questions both have, with a 95% bootstrap interval (questions resampled).

    Pairing by question removes the spread between easy and hard questions from the interval, so a
    difference between two models on the same held-out set is judged on what differs."""
    import random

    qs = sorted(set(a) & set(b))
    if not qs:
        raise ValueError("paired_bootstrap: the two runs share no question")
    d = [a[q] - b[q] for q in qs]
    rng = random.Random(seed)
    means = sorted(fmean(rng.choices(d, k=len(d))) for _ in range(reps))
    return fmean(d), means[int(0.025 * reps)], means[min(reps - 1, int(0.975 * reps))]
