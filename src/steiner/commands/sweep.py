"""`steiner sweep`: accuracy over a grid of (min_steps, max_steps), with a table and plots."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from steiner.config import add_command
    from steiner.eval.sweep import SweepConfig, main

    add_command(
        sub, "sweep", SweepConfig, main,
        help="inference-time scaling: evaluate over a grid of (min_steps, max_steps)",
        description="Run `steiner eval` once per (min_steps, max_steps) cell (--grid '0:4,2:6,4:8', or "
        "--min-steps 0,2,4 --max-steps 4,8,none crossed), sharing one sample cache and one loaded model; "
        "write report.md/json/html, accuracy_vs_tokens.png and accuracy_vs_max_steps.png into --out.",
    )
