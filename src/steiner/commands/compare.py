"""`steiner compare`: the paired difference in pass@1 between two models' evaluations, with a 95% CI."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from steiner.config import add_command
    from steiner.eval.compare import CompareConfig, main

    add_command(
        sub, "compare", CompareConfig, main,
        help="paired difference in pass@1 between two evaluations, with a 95%% bootstrap CI",
        description="Pool the samples.jsonl of the --a folders and of the --b folders (written by `steiner "
        "eval`), and print each side's pass@1 and A - B with a 95% bootstrap interval over the questions "
        "both were evaluated on.",
    )
