"""Step rewards -> token advantages (DeepSeekMath's process supervision), and outcome-only GRPO.

Process supervision (DeepSeekMath, section 4.1.3): the step rewards of all G completions of one
question are normalised together, r~ = (r - mean) / (std + eps); a token's advantage is the sum of the
normalised rewards of the steps that end at or after it, so a token is credited with everything it led
to. A step ends at its ``<|reasoning_step_end|>`` token (its id resolved from the tokenizer through
`ReasoningTokenIds`); a step cut off before its end token ends at the last token. The sequence reward
(outcome, plus the path term in step mode), normalised over the group, is added to every token.

Outcome supervision (plain GRPO): every token of completion i gets the group-normalised reward of i.
The std is the population std (zero for identical rewards, so equal rewards give zero advantages).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def normalize(values: Sequence[float], eps: float = 1e-4) -> list[float]:
    """(v - mean) / (std + eps) over ``values`` with the population std; [] for []."""
    n = len(values)
    if n == 0:
        return []
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / n) ** 0.5
    return [(v - mean) / (std + eps) for v in values]


def step_end_positions(token_ids: Sequence[int], step_end_id: int, num_steps: int) -> list[int]:
    """Token index at which each of ``num_steps`` steps ends: its step-end token, or the last token
    for a step cut off before one. Extra step-end tokens (a malformed completion) are ignored."""
    ends = [i for i, t in enumerate(token_ids) if t == step_end_id][:num_steps]
    last = max(len(token_ids) - 1, 0)
    return ends + [last] * (num_steps - len(ends))


def process_advantages(
    step_rewards: Sequence[Sequence[float]],
    completion_ids: Sequence[Sequence[int]],
    step_end_id: int,
    sequence_rewards: Sequence[float] | None = None,
    *,
    sequence_weight: float = 1.0,
    eps: float = 1e-4,
) -> list[torch.Tensor]:
    """Token advantages of a group of G completions of one question.

    Args:
        step_rewards: G lists, the reward of each parsed step of completion i.
        completion_ids: G lists of completion token ids (prompt excluded).
        step_end_id: id of ``<|reasoning_step_end|>`` in the tokenizer in use.
        sequence_rewards: G sequence-level rewards (outcome [+ path term]); normalised over the group
            and added, times ``sequence_weight``, to every token. None adds nothing.
    Returns:
        G float tensors, shape (len(completion_ids[i]),).
    """
    import torch

    if len(step_rewards) != len(completion_ids):
        raise ValueError(f"{len(step_rewards)} step-reward lists for {len(completion_ids)} completions")
    flat = normalize([r for rs in step_rewards for r in rs], eps)
    seq = normalize(list(sequence_rewards), eps) if sequence_rewards is not None else [0.0] * len(completion_ids)
    if len(seq) != len(completion_ids):
        raise ValueError(f"{len(seq)} sequence rewards for {len(completion_ids)} completions")
    out, k = [], 0
    for rs, ids, s in zip(step_rewards, completion_ids, seq, strict=True):
        adv = torch.full((len(ids),), sequence_weight * s, dtype=torch.float32)
        for end, r in zip(step_end_positions(ids, step_end_id, len(rs)), flat[k : k + len(rs)], strict=True):
            adv[: end + 1] += r  # every token at or before the step's end gets the step's reward
        k += len(rs)
        out.append(adv)
    return out


def outcome_advantages(rewards: Sequence[float], lengths: Sequence[int], *, eps: float = 1e-4) -> list[torch.Tensor]:
    """GRPO outcome supervision: completion i's tokens all get the group-normalised reward of i."""
    import torch

    if len(rewards) != len(lengths):
        raise ValueError(f"{len(rewards)} rewards for {len(lengths)} completions")
    return [torch.full((n,), a, dtype=torch.float32) for a, n in zip(normalize(list(rewards), eps), lengths, strict=True)]
