"""`steiner serve`: an OpenAI-compatible server for a Steiner model."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from steiner.config import add_command
    from steiner.serve import ServeConfig, main

    add_command(
        sub, "serve", ServeConfig, main,
        help="serve a model over an OpenAI-compatible API",
        description="Serve a save_pretrained folder at /v1/chat/completions (streaming or not), /v1/models and "
        "/health. Reasoning comes back in reasoning_content, the answer in content, reasoning token counts in "
        "usage.completion_tokens_details; min_steps, max_steps, max_reasoning_tokens, format_strict and "
        "ignore_eos are accepted as extra body fields; logprobs/top_logprobs are returned. Concurrent requests share "
        "batched forward passes. --engine vllm starts vLLM's OpenAI server with steiner's reasoning parser and "
        "logits processors instead (docs/vllm.md).",
    )
