"""Token advantages from step rewards (process supervision), by hand: per-index baselines, spans, scale."""

from __future__ import annotations

import math

import pytest

from steiner.tokenizer import ReasoningTokenIds
from steiner.train.advantages import group_step_credits, process_advantages, step_spans, token_advantages

# stand-in ids for the hand-computed cases (the tokenizer test below resolves the real ones)
T = ReasoningTokenIds(*range(100, 114))
S, E, P, B, N_END, END = T.step_start, T.step_end, T.proceed, T.backtrack, T.name_end, T.reasoning_end


def test_identical_completions_get_exactly_zero():
    """The review's case: 8 identical correct completions whose steps carry different degree bonuses.
    The pooled normalisation gave them -0.7 / -1.4; a per-index baseline gives exactly 0."""
    ids = [S, 5, E, P, S, 6, E, P, S, 7, E, END, 9]
    steps = [1.1, 1.05, 1.0 + 0.1 * math.log(3)]
    adv = process_advantages([steps] * 8, [1.2] * 8, [ids] * 8, T)
    assert all(a.tolist() == [0.0] * len(ids) for a in adv)
    credits, seq = group_step_credits([steps] * 8, [1.2] * 8)
    assert credits == [[0.0, 0.0, 0.0]] * 8 and seq == [0.0] * 8


def test_step_span_includes_its_decision_token():
    ids = [S, 5, E, P, S, 6, E, END, 9]
    assert step_spans(ids, T, 2) == [3, 7]  # the proceed and the end decision belong to their steps
    adv = token_advantages([1.0, 10.0], 0.5, [3, 7], len(ids))
    assert adv.tolist() == [11.5, 11.5, 11.5, 11.5, 10.5, 10.5, 10.5, 10.5, 0.5]


def test_backtrack_credit_reaches_the_backtrack_token_and_back_to_text():
    # step 1 proceeds, step 2 backtracks, step 3's name is "Back to step 1: ..." (tokens 20, 21)
    ids = [S, 5, E, P, S, 6, E, B, S, T.name_start, 20, 21, N_END, 7, E, END, 9]
    ends = step_spans(ids, T, 3)
    assert ends == [3, 12, 15]
    assert ids[7] == B and ids[ends[1]] == N_END
    adv = token_advantages([0.0, 2.0, 0.0], 0.0, ends, len(ids))
    assert adv[7] == 2.0 and adv[10:13].tolist() == [2.0, 2.0, 2.0]  # backtrack token, "Back to step 1: ", name end
    assert adv[13:].tolist() == [0.0] * 4


def test_cut_off_steps_end_at_the_last_token():
    assert step_spans([S, 5, E, P, S, 6, 7], T, 2) == [3, 6]
    assert step_spans([S, 5, E, B, S, T.name_start, 20], T, 1) == [6]  # cut inside the "Back to" name
    assert step_spans([], T, 1) == [0]


def test_group_credits_hand_computed():
    # steps [1, 0] and [2]: index 0 mean 1.5 -> [-0.5, 0.5]; index 1 mean (0 + 0)/2 -> [0]
    # sequence rewards [1, 0] -> [0.5, -0.5]; totals [2, 2] std 0; rms of credits sqrt(0.5/3)
    credits, seq = group_step_credits([[1.0, 0.0], [2.0]], [1.0, 0.0], std_floor=0.0)
    d = math.sqrt(0.5 / 3)
    assert credits[0] == pytest.approx([-0.5 / d, 0.0]) and credits[1] == pytest.approx([0.5 / d])
    assert seq == pytest.approx([0.5 / d, -0.5 / d])
    # the floor keeps a small difference small: totals std 0.05, credits rms 0.05/sqrt(2) < floor 0.1
    credits, seq = group_step_credits([[1.0], [1.1]], [0.0, 0.0], std_floor=0.1)
    assert credits == [[pytest.approx(-0.5)], [pytest.approx(0.5)]]
    credits, _ = group_step_credits([[1.0], [1.1]], [0.0, 0.0], scale=False)
    assert credits == [[pytest.approx(-0.05)], [pytest.approx(0.05)]]


def test_longer_completion_is_compared_with_zero_on_extra_steps():
    # a completion that goes on into a blind dead end (-1) where the other has stopped
    credits, seq = group_step_credits([[1.0], [1.0, -1.0]], [1.0, 0.0], scale=False)
    assert credits == [[0.0], [0.0, -0.5]] and seq == [0.5, -0.5]


def test_empty_group_and_completion_without_steps():
    assert group_step_credits([], []) == ([], [])
    assert process_advantages([], [], [], T) == []
    adv = process_advantages([[], [1.0]], [0.0, 1.0], [[9, 9], [S, 5, E, END]], T, scale=False)
    assert adv[0].tolist() == [-0.5, -0.5]
    assert adv[1].tolist() == [0.5 + 0.5] * 4
    with pytest.raises(ValueError, match="sequence rewards"):
        group_step_credits([[1.0]], [1.0, 2.0])
    with pytest.raises(ValueError, match="step credits"):
        token_advantages([1.0], 0.0, [], 3)


def test_spans_with_the_real_tokenizer(tiny_tokenizer):
    from steiner.format import ReasoningPath, Step, render

    tids = ReasoningTokenIds.from_tokenizer(tiny_tokenizer)
    path = ReasoningPath([Step("a", "b", "c", "d"), Step("x", "y", "z", "w", decision="backtrack", returns_to=1),
                          Step("e", "f", "g", "h", decision="end")], answer="24")
    ids = tiny_tokenizer(render(path), add_special_tokens=False)["input_ids"]
    ends = step_spans(ids, tids, 3)
    assert [ids[i] for i in ends] == [tids.proceed, tids.name_end, tids.reasoning_end]
    back = tiny_tokenizer.decode(ids[ends[0] + 1 : ends[1] + 1])
    assert back.endswith("Back to step 1: e<|reasoning_step_name_end|>")
    adv = process_advantages([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], [0.0, 0.0], [ids, ids], tids, scale=False)[0]
    assert adv[: ends[1] + 1].tolist() == [0.5] * (ends[1] + 1) and adv[ends[1] + 1 :].abs().sum() == 0
