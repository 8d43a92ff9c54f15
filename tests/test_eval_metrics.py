"""Metrics: unbiased pass@k against brute force, maj@k over all n samples, failures never correct."""

from __future__ import annotations

import itertools
from math import comb

import pytest

from steiner.eval.metrics import default_ks, majority_vote, pass_at_k, per_question, summarize


def brute_pass_at_k(outcomes: list[bool], k: int) -> float:
    """The fraction of all k-subsets of the samples that hold at least one correct sample."""
    subsets = list(itertools.combinations(outcomes, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_matches_brute_force(n: int) -> None:
    for c in range(n + 1):
        outcomes = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(outcomes, k), abs=1e-12)
            assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


def test_pass_at_k_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


def test_majority_vote_ties_are_deterministic() -> None:
    assert majority_vote(["B", "A", "A", "B"]) == "B"  # tie: the answer seen first wins
    assert majority_vote(["A", "B", "B", "A"]) == "A"
    assert majority_vote([None, None, "C"]) == "C"
    assert majority_vote([None, None]) is None


def samples_for(qid: str, answers: list[str | None], gold: str, failed: tuple[int, ...] = ()) -> list[dict]:
    return [
        {"question_id": qid, "sample": j, "extracted": None if j in failed else a, "gold": gold,
         "correct": (a == gold) and j not in failed, "failed": j in failed, "format_ok": j % 2 == 0,
         "reasoning_tokens": 10 * (j + 1), "num_steps": j, "num_backtracks": 1}
        for j, a in enumerate(answers)
    ]


def test_maj_uses_all_n_samples() -> None:
    # the first two samples say A (wrong), but over all six B wins: maj@6 must be correct
    s = samples_for("q1", ["A", "A", "B", "B", "B", "C"], gold="B")
    m = summarize(s)
    assert m["n"] == 6 and m["maj@6"] == 1.0
    assert m["pass@1"] == pytest.approx(3 / 6)
    assert m["pass@2"] == pytest.approx(pass_at_k(6, 3, 2))
    # a tie between A and B over all samples: A was seen first and is wrong
    assert summarize(samples_for("q", ["A", "B", "A", "B"], gold="B"))["maj@4"] == 0.0


def test_summarize_counts_failures_as_wrong() -> None:
    s = samples_for("q1", ["B", "B", "B", "B"], gold="B", failed=(2, 3)) + samples_for("q2", ["A"] * 4, gold="C")
    m = summarize(s)
    assert m["num_questions"] == 2 and m["num_samples"] == 8 and m["num_failed"] == 2
    assert m["pass@1"] == pytest.approx((2 / 4 + 0) / 2)
    assert m["maj@4"] == 0.5
    # statistics are over non-failed samples only
    assert m["mean_reasoning_tokens"] == pytest.approx((10 + 20 + 10 + 20 + 30 + 40) / 6)
    assert m["format_valid"] == pytest.approx(3 / 6)
    rows = per_question(s)
    assert rows[0] == {"id": "q1", "gold": "B", "n": 4, "num_correct": 2, "num_failed": 2, "majority": "B",
                       "majority_correct": True}


def test_default_ks() -> None:
    assert default_ks(1) == [1]
    assert default_ks(8) == [1, 2, 4, 8]
    assert default_ks(6) == [1, 2, 4, 6]


def test_paired_bootstrap_interval():
    from steiner.eval.metrics import paired_bootstrap, per_question_accuracy

    acc = per_question_accuracy([{"question_id": "q1", "correct": True}, {"question_id": "q1", "correct": False},
                                 {"question_id": "q2", "correct": True}])
    assert acc == {"q1": 0.5, "q2": 1.0}
    # b is a plus 0.1 on every question: the difference is exactly -0.1 and every resample agrees
    a = {f"q{i}": (i % 3) / 3 for i in range(50)}
    b = {q: v + 0.1 for q, v in a.items()}
    mean, lo, hi = paired_bootstrap(a, b)
    assert mean == pytest.approx(-0.1) and lo == pytest.approx(-0.1) and hi == pytest.approx(-0.1)
    # a noisy difference centred on 0 has an interval that contains 0; one of +0.5 everywhere does not
    c = {q: (1.0 if i % 2 else 0.0) for i, q in enumerate(a)}
    mean, lo, hi = paired_bootstrap(c, {q: 0.5 for q in c})
    assert lo < 0 < hi and mean == pytest.approx(0.0)
    with pytest.raises(ValueError, match="share no question"):
        paired_bootstrap({"x": 1.0}, {"y": 1.0})
