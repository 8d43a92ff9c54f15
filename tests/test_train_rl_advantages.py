"""Token advantages from step rewards (process supervision) and outcome-only GRPO, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from steiner.train.advantages import normalize, outcome_advantages, process_advantages, step_end_positions

E = 99  # a stand-in step-end id for the hand-computed cases; the tokenizer test resolves the real one


def test_normalize_population_std():
    assert normalize([1.0, 0.0, 2.0], eps=0.0) == pytest.approx([0.0, -math.sqrt(1.5), math.sqrt(1.5)])
    assert normalize([3.0, 3.0]) == [0.0, 0.0]
    assert normalize([]) == []


def test_step_end_positions_truncated_step_ends_at_last_token():
    assert step_end_positions([5, E, 6, E, 7], E, 2) == [1, 3]
    assert step_end_positions([5, E, 6, 7], E, 2) == [1, 3]
    assert step_end_positions([5, E, E], E, 1) == [1]


def test_process_advantages_hand_computed():
    ids = [[5, E, 6, 7, E, 8], [9, E, 3]]
    z = math.sqrt(1.5)  # step rewards [1, 0] and [2]: mean 1, std sqrt(2/3) -> normalised [0, -z, z]
    adv = process_advantages([[1.0, 0.0], [2.0]], ids, E, eps=0.0)
    torch.testing.assert_close(adv[0], torch.tensor([-z, -z, -z, -z, -z, 0.0]))
    torch.testing.assert_close(adv[1], torch.tensor([z, z, 0.0]))
    # sequence rewards [1, 0] normalise to [1, -1] and are added to every token
    adv = process_advantages([[1.0, 0.0], [2.0]], ids, E, [1.0, 0.0], eps=0.0)
    torch.testing.assert_close(adv[0], torch.tensor([1 - z, 1 - z, 1 - z, 1 - z, 1 - z, 1.0]))
    torch.testing.assert_close(adv[1], torch.tensor([z - 1, z - 1, -1.0]))
    adv = process_advantages([[1.0, 0.0], [2.0]], ids, E, [1.0, 0.0], sequence_weight=0.5, eps=0.0)
    torch.testing.assert_close(adv[1], torch.tensor([z - 0.5, z - 0.5, -0.5]))


def test_earlier_tokens_sum_later_steps():
    ids = [[E, E, E], [E, E, E]]
    # rewards [3, 0, 0] and [0, 0, 3]: mean 1, std sqrt(2) -> [a, b, b] and [b, b, a]
    adv = process_advantages([[3.0, 0.0, 0.0], [0.0, 0.0, 3.0]], ids, E, eps=0.0)
    a, b = 2 / math.sqrt(2), -1 / math.sqrt(2)
    torch.testing.assert_close(adv[0], torch.tensor([a + 2 * b, 2 * b, b]))
    torch.testing.assert_close(adv[1], torch.tensor([a + 2 * b, a + b, a]))


def test_outcome_advantages():
    adv = outcome_advantages([1.0, 0.0, 0.0, 1.0], [2, 1, 3, 1], eps=0.0)
    assert [t.tolist() for t in adv] == [[1.0, 1.0], [-1.0], [-1.0, -1.0, -1.0], [1.0]]
    assert all(float(t.abs().sum()) == 0 for t in outcome_advantages([0.5, 0.5], [2, 2]))


def test_step_ends_resolved_from_the_tokenizer(tiny_tokenizer):
    from steiner.format import ReasoningPath, Step, render
    from steiner.tokenizer import ReasoningTokenIds

    end_id = ReasoningTokenIds.from_tokenizer(tiny_tokenizer).step_end
    path = ReasoningPath([Step("a", "b", "c", "d"), Step("e", "f", "g", "h", decision="end")], answer="24")
    ids = tiny_tokenizer(render(path), add_special_tokens=False)["input_ids"]
    ends = step_end_positions(ids, end_id, 2)
    assert [ids[i] for i in ends] == [end_id, end_id]
    adv = process_advantages([[1.0, 0.0]], [ids], end_id, eps=0.0)[0]
    # step rewards [1, 0] normalise to [1, -1]: step 1's tokens get 1 - 1, step 2's get -1, the rest 0
    assert adv[: ends[0] + 1].tolist() == [0.0] * (ends[0] + 1)
    assert adv[ends[0] + 1 : ends[1] + 1].tolist() == [-1.0] * (ends[1] - ends[0])
    assert adv[ends[1] + 1 :].tolist() == [0.0] * (len(ids) - ends[1] - 1)
