"""Inference: logits processors (step bounds, full format), batched generation, the reasoning parser.

Names are loaded on first use, so ``import steiner.infer.reasoning_parser`` does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "StepBoundsLogitsProcessor": "steiner.infer.step_bounds",
    "FormatLogitsProcessor": "steiner.infer.format_processor",
    "Generation": "steiner.infer.generation",
    "DecodeOptions": "steiner.infer.options",
    "make_processors": "steiner.infer.options",
    "FormatVLLMProcessor": "steiner.infer.vllm_processors",
    "generate": "steiner.infer.generation",
    "step_bounds_for_vllm": "steiner.infer.vllm_processors",
    "StepBoundsVLLMProcessor": "steiner.infer.vllm_processors",
    "SteinerReasoningParser": "steiner.infer.reasoning_parser",
    "register_vllm_plugin": "steiner.infer.reasoning_parser",
    "reasoning_stats": "steiner.infer.reasoning_parser",
    "format_reasoning": "steiner.infer.pretty",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'steiner.infer' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
