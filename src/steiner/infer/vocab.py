"""The token facts every inference piece needs, resolved once from the tokenizer in use.

Nothing here hard-codes an id: the 14 reasoning tokens come from `ReasoningTokenIds`, the end of a
turn from ``tokenizer.eos_token_id``, and "text" is every vocabulary entry that is not an added or
special token (added tokens are control markup: reasoning tokens, ChatML markers, pad).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from steiner.tokenizer import ReasoningTokenIds

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def check_step_bounds(min_steps: object, max_steps: object) -> None:
    """Raise ValueError naming the argument when the step bounds cannot be used."""
    for name, value in (("min_steps", min_steps), ("max_steps", max_steps)):
        if value is None and name == "max_steps":
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if max_steps is not None and min_steps > max_steps:  # type: ignore[operator]
        raise ValueError(f"min_steps ({min_steps}) must not exceed max_steps ({max_steps})")


@dataclass(frozen=True)
class InferVocab:
    """Reasoning token ids, the end-of-turn id and the control ids of one tokenizer."""

    ids: ReasoningTokenIds
    eos_id: int
    size: int  # len(tokenizer): ids at or past it are padding rows of the model's output layer
    control_ids: frozenset[int]  # added/special tokens: never text inside a field or the answer

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> InferVocab:
        ids = ReasoningTokenIds.from_tokenizer(tokenizer)
        if tokenizer.eos_token_id is None:
            raise ValueError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no eos token; "
                "run steiner.tokenizer.extend_tokenizer first"
            )
        control = set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        control |= set(tokenizer.all_special_ids)
        control |= set(ids.all())
        return cls(ids=ids, eos_id=int(tokenizer.eos_token_id), size=len(tokenizer), control_ids=frozenset(control))
