"""`steiner eval`: evaluate a local model or an OpenAI-compatible endpoint on a task."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from steiner.config import add_command
    from steiner.eval.runner import EvalConfig, main

    add_command(
        sub, "eval", EvalConfig, main,
        help="evaluate a model (pass@1, pass@k, maj@n, format validity, reasoning length)",
        description="Sample --n answers per question from a local model (--model DIR) or an OpenAI-compatible "
        "endpoint (--base-url URL --model-name NAME), grade them, and write samples.jsonl (a cache: a rerun "
        "generates only what is missing), report.json and report.md into --out.",
    )
