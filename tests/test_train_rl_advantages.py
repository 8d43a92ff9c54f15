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


def test_local_credit_lands_on_the_steps_own_tokens():
    ids = [S, 5, E, P, S, 6, E, END, 9]
    adv = token_advantages([1.0, 10.0], 0.5, [3, 7], len(ids), credit="local")
    assert adv.tolist() == [1.5, 1.5, 1.5, 1.5, 10.5, 10.5, 10.5, 10.5, 0.5]
    with pytest.raises(ValueError, match="credit"):
        token_advantages([1.0], 0.0, [3], 4, credit="sum")


def test_local_credit_does_not_make_a_false_early_stop_beat_an_honest_search():
    """The session-20 exploit, by hand (unscaled). Completion A stops at step 2 with a false hit: a dead
    end backtracked (-0.1), then a blind dead end (-1.0). Completion B goes on honestly -- two dead ends
    backtracked -- then slips twice (unmatched, -1.5 each). Per-index baselines: step 1 mean -0.1 (both
    0); step 2 mean (-1.0 - 0.1) / 2 = -0.55: A -0.45, B +0.45; steps 3-4: B against A's 0: -0.75 each.
    Sum-to-go puts B's later slips on its honest step 2 (0.45 - 1.5 = -1.05 < A's -0.45): going on is
    pushed down harder than stopping with a false claim. Local credit keeps B's step 2 at +0.45, above
    A's -0.45, and charges the slips to the slips."""
    a_ids = [S, 5, E, B, S, T.name_start, 20, N_END, 6, E, END, 9]
    b_ids = [S, 5, E, B, S, T.name_start, 20, N_END, 6, E, B, S, T.name_start, 21, N_END, 7, E, P,
             S, 8, E, P]
    steps = [[-0.1, -1.0], [-0.1, -0.1, -1.5, -1.5]]
    credits, seq = group_step_credits(steps, [0.0, 0.0], scale=False)
    assert credits[0] == pytest.approx([0.0, -0.45]) and credits[1] == pytest.approx([0.0, 0.45, -0.75, -0.75])
    a_step2, b_step2 = 8, 8  # the move token of step 2 in both completions
    to_go = process_advantages(steps, [0.0, 0.0], [a_ids, b_ids], T, scale=False)
    local = process_advantages(steps, [0.0, 0.0], [a_ids, b_ids], T, scale=False, credit="local")
    assert to_go[0][a_step2].item() == pytest.approx(-0.45) and to_go[1][b_step2].item() == pytest.approx(-1.05)
    assert local[0][a_step2].item() == pytest.approx(-0.45) and local[1][b_step2].item() == pytest.approx(0.45)
    assert local[1][-1].item() == pytest.approx(-0.75)  # the last slip carries its own credit only


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
