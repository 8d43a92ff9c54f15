"""Split a Steiner completion into reasoning and answer, whole or streamed, in vLLM's parser shape.

``reasoning`` is the completion from ``<|reasoning_start|>`` up to and including
``<|reasoning_end|>`` with every reasoning token kept, so ``steiner.format.parse(reasoning)`` still
recovers the steps; ``content`` is the answer after it. A completion that does not open with
``<|reasoning_start|>`` is all content. The streaming method gives the same split piece by piece: the
concatenated deltas equal the whole-text split.

vLLM strips special tokens from its output text unless the request sets
``skip_special_tokens=False``; the parser needs them, so its ``adjust_request`` sets it on every
request it serves (see docs/vllm.md).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from steiner.format import BACKTRACK, REASONING_END, REASONING_START, STEP_END, parse

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


# where vLLM has kept DeltaMessage, newest first (0.32: generate.base.protocol)
_DELTA_MODULES = (
    "vllm.entrypoints.generate.base.protocol",
    "vllm.entrypoints.openai.engine.protocol",
    "vllm.entrypoints.openai.protocol",
)


@dataclass
class Delta:
    """A streamed piece (used when vLLM's DeltaMessage is not importable)."""

    reasoning_content: str | None = None
    content: str | None = None

    @property
    def reasoning(self) -> str | None:  # the newer vLLM field name
        return self.reasoning_content


@functools.cache
def _vllm_delta_class() -> Any:
    """vLLM's DeltaMessage class, or None when vLLM is not installed."""
    for module in _DELTA_MODULES:
        try:
            return importlib.import_module(module).DeltaMessage
        except (ImportError, AttributeError):
            continue
    return None


def make_delta(reasoning: str | None, content: str | None) -> Any:
    """vLLM's DeltaMessage when vLLM is installed (either field name), else a `Delta`."""
    cls = _vllm_delta_class()
    if cls is None:
        return Delta(reasoning_content=reasoning, content=content)
    key = "reasoning_content" if "reasoning_content" in getattr(cls, "model_fields", {}) else "reasoning"
    return cls(**{key: reasoning, "content": content})


def split_text(text: str) -> tuple[str, str]:
    """(reasoning, content) of a whole or partial completion, both possibly empty.

    Prefix-monotone: for a longer text, both parts only grow, which is what makes streaming exact.
    """
    if not (text.startswith(REASONING_START) or REASONING_START.startswith(text)):
        return "", text
    idx = text.find(REASONING_END)
    if idx < 0:
        return text, ""
    cut = idx + len(REASONING_END)
    return text[:cut], text[cut:]


class SteinerReasoningParser:
    """Reasoning parser for Steiner models with vLLM's method shapes (registered as "steiner")."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, *args: Any, **kwargs: Any) -> None:
        self.model_tokenizer = tokenizer
        self._model_config = kwargs.get("model_config")  # what vLLM's base class keeps
        vocab = tokenizer.get_vocab()
        missing = [t for t in (REASONING_START, REASONING_END) if t not in vocab]
        if missing:
            raise ValueError(f"tokenizer lacks reasoning tokens {missing}; extend it with steiner.tokenizer first")
        self.start_token_id = vocab[REASONING_START]
        self.end_token_id = vocab[REASONING_END]

    def adjust_request(self, request: Any) -> Any:
        """Keep special tokens in the request's output text: the split needs the reasoning tokens."""
        if hasattr(request, "skip_special_tokens"):
            request.skip_special_tokens = False
        return request

    def is_reasoning_end(self, input_ids: Sequence[int]) -> bool:
        """True once ``<|reasoning_end|>`` is among the ids."""
        return self.end_token_id in input_ids

    def is_reasoning_end_streaming(self, input_ids: Sequence[int], delta_ids: Sequence[int]) -> bool:
        return self.end_token_id in delta_ids or self.is_reasoning_end(input_ids)

    def extract_content_ids(self, input_ids: list[int]) -> list[int]:
        """The ids after ``<|reasoning_end|>`` (none while reasoning goes on)."""
        ids = list(input_ids)
        if self.end_token_id not in ids:
            return [] if ids and ids[0] == self.start_token_id else ids
        return ids[ids.index(self.end_token_id) + 1 :]

    def count_reasoning_tokens(self, token_ids: Sequence[int]) -> int:
        """Ids up to and including ``<|reasoning_end|>`` (all of them while reasoning goes on)."""
        ids = list(token_ids)
        if not ids or ids[0] != self.start_token_id:
            return 0
        return ids.index(self.end_token_id) + 1 if self.end_token_id in ids else len(ids)

    def extract_reasoning_content(self, model_output: str, request: Any = None) -> tuple[str | None, str | None]:
        """(reasoning, content) of a whole completion; None where a part is empty."""
        reasoning, content = split_text(model_output)
        return reasoning or None, content or None

    def extract_reasoning_content_streaming(
        self,
        previous_text: str,
        current_text: str,
        delta_text: str,
        previous_token_ids: Sequence[int],
        current_token_ids: Sequence[int],
        delta_token_ids: Sequence[int],
    ) -> Any:
        """The new reasoning and content in ``delta_text`` as a DeltaMessage-like object, or None."""
        r0, c0 = split_text(previous_text)
        r1, c1 = split_text(current_text)
        reasoning, content = r1[len(r0) :], c1[len(c0) :]
        if not reasoning and not content:
            return None
        return make_delta(reasoning or None, content or None)

    # newer vLLM names
    extract_reasoning = extract_reasoning_content
    extract_reasoning_streaming = extract_reasoning_content_streaming


def register_vllm_plugin(name: str = "steiner") -> type:
    """Register `SteinerReasoningParser` with vLLM under ``name``; returns the registered class.

    Put ``from steiner.infer.reasoning_parser import register_vllm_plugin; register_vllm_plugin()`` in a
    file and pass it to ``vllm serve --reasoning-parser-plugin FILE --reasoning-parser steiner``.
    """
    from vllm.reasoning import ReasoningParser, ReasoningParserManager

    cls = type("SteinerVLLMReasoningParser", (SteinerReasoningParser, ReasoningParser), {})
    ReasoningParserManager.register_module(name=name, module=cls)
    return cls


def reasoning_stats(text: str, tokenizer: PreTrainedTokenizerBase | None = None) -> dict[str, int]:
    """Steps, backtracks and (with a tokenizer) reasoning tokens of a completion.

    Counts come from the parsed path; without a parsable path they fall back to counting
    ``<|reasoning_step_end|>`` and ``<|reasoning_backtrack|>`` in the text.
    """
    path = parse(text)
    reasoning, _ = split_text(text)
    if path.steps:
        stats = {"steps": len(path.steps), "backtracks": path.num_backtracks}
    else:
        stats = {"steps": reasoning.count(STEP_END), "backtracks": reasoning.count(BACKTRACK)}
    if tokenizer is not None:
        stats["reasoning_tokens"] = len(tokenizer(reasoning, add_special_tokens=False)["input_ids"]) if reasoning else 0
    return stats
