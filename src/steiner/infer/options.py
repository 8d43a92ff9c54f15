"""Decode options, once: what generate, eval, serve (and RL) sample with, and the processors they imply.

`DecodeOptions` holds the settings one completion depends on; `make_processors` turns them into the
logits processors, so the choice "format processor or step bounds" is written in one place:

- the format processor (`FormatLogitsProcessor`) when ``format_strict`` is set or a
  ``max_reasoning_tokens`` budget needs it; it also finishes the completion within ``max_new_tokens``;
- else the step-bounds processor (`StepBoundsLogitsProcessor`) when bounds are set (or always, for
  callers that want the reasoning opened and steps started even without bounds, as the server does);
- else none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def _check_int(name: str, value: Any, lo: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")


@dataclass(frozen=True)
class DecodeOptions:
    """How one completion is sampled (field order is part of the interface: eval builds it positionally).

    temperature: 0 decodes greedily. top_p: nucleus mass in (0, 1]. max_new_tokens: completion budget,
    eos included. min_steps / max_steps: step bounds. format_strict: enforce the whole format.
    max_reasoning_tokens: reasoning budget (implies the format processor). seed: None samples freshly.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    min_steps: int = 0
    max_steps: int | None = None
    format_strict: bool = False
    max_reasoning_tokens: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {t!r}")
        p = self.top_p
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {p!r}")
        _check_int("max_new_tokens", self.max_new_tokens, 1)
        _check_int("min_steps", self.min_steps, 0)
        _check_int("max_steps", self.max_steps, 0, optional=True)
        if self.max_steps is not None and self.min_steps > self.max_steps:
            raise ValueError(f"min_steps ({self.min_steps}) must not exceed max_steps ({self.max_steps})")
        _check_int("max_reasoning_tokens", self.max_reasoning_tokens, 1, optional=True)
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")

    @property
    def strict(self) -> bool:
        """Whether the format processor is used (asked for, or needed by a reasoning budget)."""
        return self.format_strict or self.max_reasoning_tokens is not None

    @property
    def bounded(self) -> bool:
        return bool(self.min_steps) or self.max_steps is not None


def make_processors(tokenizer: PreTrainedTokenizerBase, options: DecodeOptions, *,
                    prompt_lengths: int | Sequence[int] | None = None, step_bounds_always: bool = False) -> list:
    """The logits processors ``options`` call for (see the module docstring), fresh ones each call.

    ``prompt_lengths``: where completions start (`steiner.infer.step_bounds.CompletionStart`).
    """
    from steiner.infer.format_processor import FormatLogitsProcessor
    from steiner.infer.step_bounds import StepBoundsLogitsProcessor

    if options.strict:
        return [FormatLogitsProcessor(tokenizer, options.min_steps, options.max_steps, options.max_reasoning_tokens,
                                      prompt_lengths, max_new_tokens=options.max_new_tokens)]
    if options.bounded or step_bounds_always:
        return [StepBoundsLogitsProcessor(tokenizer, options.min_steps, options.max_steps, prompt_lengths)]
    return []
