"""`steiner serve`: an OpenAI-compatible server for a Steiner model."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from steiner.config import add_arguments
    from steiner.serve.config import ServeConfig

    p = sub.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible API",
        description="Serve a save_pretrained folder at /v1/chat/completions (streaming or not), /v1/models and "
        "/health. Reasoning comes back in reasoning_content, the answer in content, reasoning token counts in "
        "usage.completion_tokens_details; min_steps, max_steps, max_reasoning_tokens, format_strict and "
        "ignore_eos are accepted as extra body fields. Concurrent requests share batched forward passes.",
    )
    add_arguments(p, ServeConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from steiner.config import config_from_args
    from steiner.serve import ServeConfig, main

    return main(config_from_args(ServeConfig, args))
