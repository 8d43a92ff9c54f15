"""Step rewards -> token advantages (process supervision), and where each step's credit lands.

DeepSeekMath's process supervision (section 4.1.3) normalises the step rewards of a group's G
completions together and gives each token the sum of the normalised rewards of the steps that end at
or after it. We keep the sum-to-go (by default) and change three things, each fixing a measured defect,
and offer a fourth:

- **Baseline per step index.** Step k of completion i is centred on the mean of the k-th step rewards
  of the group (a completion with fewer steps counts 0 there): ``c_ik = r_ik - mean_j r_jk``.
  DeepSeekMath's pooled mean compares a step with every step of every completion, so eight identical
  correct completions got advantages of -0.7 and -1.4 from the spread of degree bonuses along one path.
  Here a group of identical completions gets exactly zero, as outcome GRPO gives it.
- **One scale, floored.** Step credits and the centred sequence reward (outcome + path term, times
  ``sequence_weight``, on every token) are divided by ``max(std of the completions' total rewards,
  RMS of the centred step rewards, std_floor)``. The floor (in reward units) keeps differences smaller
  than a degree bonus small instead of blowing them up to unit size; ``scale=False`` divides by nothing
  (Dr. GRPO).
- **Where a step's credit lands** (``credit``). ``"to_go"`` (DeepSeekMath): on every token up to the
  step's end, so a token carries the credits of its own step and of every later one. ``"local"``: only
  on the step's own tokens (from the previous step's end), so a slip late in a search is charged to
  the slip, not to the correct moves before it. Measured (docs/demo.md, session 20): with sum-to-go
  at learning rate 2e-4, a search that went on and slipped later charged its early correct steps with
  every later unmatched step, so stopping early with a false hit (one blind dead end) looked better
  than going on, and held-out pass@1 fell from 0.485 to 0.273 while the mean reward rose.
- **Spans.** A step ends at its decision token (proceed / backtrack / reasoning_end right after its
  ``<|reasoning_step_end|>``), so the decision is credited with the step it closes. A step that
  backtracks ends at the next step's ``<|reasoning_step_name_end|>``: its credit also reaches the
  "Back to step K: " text that says where the reasoning resumes. A step cut off before its end ends at
  the last token.

Outcome mode is plain GRPO and is left to TRL's GRPOTrainer (`steiner.train.grpo`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from steiner.tokenizer import ReasoningTokenIds


CREDITS = ("to_go", "local")


def _centre(values: Sequence[float]) -> list[float]:
    """v - mean(v); exactly zero when all values are equal (no rounding residue)."""
    if not values:
        return []
    if all(v == values[0] for v in values):
        return [0.0] * len(values)
    mean = sum(values) / len(values)
    return [v - mean for v in values]


def _std(values: Sequence[float]) -> float:
    n = len(values)
    if n == 0:
        return 0.0
    mean = sum(values) / n
    return (sum((v - mean) ** 2 for v in values) / n) ** 0.5


def step_spans(token_ids: Sequence[int], tids: ReasoningTokenIds, num_steps: int) -> list[int]:
    """Inclusive end position of each of ``num_steps`` parsed steps in a completion's ``token_ids``.

    The k-th ``<|reasoning_step_end|>`` closes step k; the decision token right after it belongs to the
    step; after a backtrack the step runs on to the next step's name end (the "Back to step K: " text).
    Steps without a step-end token (cut off, or a malformed completion) end at the last token.
    """
    n = len(token_ids)
    last = max(n - 1, 0)
    ends = [i for i, t in enumerate(token_ids) if t == tids.step_end]
    decisions = (tids.proceed, tids.backtrack, tids.reasoning_end)
    out: list[int] = []
    for k in range(num_steps):
        if k >= len(ends):
            out.append(last)
            continue
        e = ends[k]
        if e + 1 < n and token_ids[e + 1] in decisions:
            e += 1
            if token_ids[e] == tids.backtrack:
                stop = ends[k + 1] if k + 1 < len(ends) else n
                name_end = next((i for i in range(e + 1, stop) if token_ids[i] == tids.name_end), None)
                e = name_end if name_end is not None else (last if stop == n else e)
        out.append(e)
    return out


def group_step_credits(
    step_rewards: Sequence[Sequence[float]],
    sequence_rewards: Sequence[float],
    *,
    sequence_weight: float = 1.0,
    scale: bool = True,
    std_floor: float = 0.1,
) -> tuple[list[list[float]], list[float]]:
    """Per-step credits and the per-completion sequence credit of one group (see the module docstring).

    Args:
        step_rewards: G lists, the reward of each parsed step of completion i (a list may be empty).
        sequence_rewards: G sequence-level rewards (outcome, plus the path term in step mode).
    Returns:
        (credits, seq): ``credits[i][k]`` is added to every token of completion i up to step k's end,
        ``seq[i]`` to every token of completion i. An empty group gives ([], []).
    """
    g = len(step_rewards)
    if len(sequence_rewards) != g:
        raise ValueError(f"{len(sequence_rewards)} sequence rewards for {g} completions")
    if g == 0:
        return [], []
    depth = max((len(rs) for rs in step_rewards), default=0)
    credits: list[list[float]] = [[0.0] * len(rs) for rs in step_rewards]
    for k in range(depth):
        column = [rs[k] if k < len(rs) else 0.0 for rs in step_rewards]
        for i, c in enumerate(_centre(column)):
            if k < len(step_rewards[i]):
                credits[i][k] = c
    seq = [sequence_weight * c for c in _centre(list(sequence_rewards))]
    if scale:
        totals = [sequence_weight * s + sum(rs) for s, rs in zip(sequence_rewards, step_rewards, strict=True)]
        flat = [c for cs in credits for c in cs]
        rms = (sum(c * c for c in flat) / len(flat)) ** 0.5 if flat else 0.0
        denom = max(_std(totals), rms, std_floor)
        if denom > 0:
            credits = [[c / denom for c in cs] for cs in credits]
            seq = [s / denom for s in seq]
    return credits, seq


def token_advantages(credits: Sequence[float], seq_credit: float, ends: Sequence[int], length: int,
                     credit: str = "to_go") -> torch.Tensor:
    """Advantages of one completion's ``length`` tokens: ``seq_credit`` everywhere, plus each step's credit
    on every token at or before that step's end (``credit="to_go"``), or only on the step's own tokens,
    after the previous step's end (``"local"``); ``ends`` from `step_spans`."""
    import torch

    if len(credits) != len(ends):
        raise ValueError(f"{len(credits)} step credits for {len(ends)} step spans")
    if credit not in CREDITS:
        raise ValueError(f"credit must be one of {CREDITS}, got {credit!r}")
    adv = torch.full((length,), float(seq_credit), dtype=torch.float32)
    start = 0
    for end, c in zip(ends, credits, strict=True):
        adv[(start if credit == "local" else 0) : end + 1] += c
        start = max(start, end + 1)
    return adv


def process_advantages(
    step_rewards: Sequence[Sequence[float]],
    sequence_rewards: Sequence[float],
    completion_ids: Sequence[Sequence[int]],
    tids: ReasoningTokenIds,
    *,
    sequence_weight: float = 1.0,
    scale: bool = True,
    std_floor: float = 0.1,
    credit: str = "to_go",
) -> list[torch.Tensor]:
    """Token advantages of a group of G completions of one question: G float tensors, one per completion,
    of shape (len(completion_ids[i]),). Composes `group_step_credits`, `step_spans`, `token_advantages`."""
    if len(completion_ids) != len(step_rewards):
        raise ValueError(f"{len(step_rewards)} step-reward lists for {len(completion_ids)} completions")
    credits, seq = group_step_credits(step_rewards, sequence_rewards, sequence_weight=sequence_weight,
                                      scale=scale, std_floor=std_floor)
    return [token_advantages(cs, s, step_spans(ids, tids, len(cs)), len(ids), credit)
            for cs, s, ids in zip(credits, seq, completion_ids, strict=True)]
