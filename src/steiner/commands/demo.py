"""`steiner demo`: the whole recipe end to end on the built-in Countdown domain, on a CPU."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from steiner.config import add_arguments
    from steiner.demo import DemoConfig

    p = sub.add_parser(
        "demo",
        help="run the whole recipe in miniature on Countdown (CPU, no network)",
        description="Synthesise Countdown reasoning with the built-in teacher (random truncation, DAGs, "
        "backtracking paths), train a tokenizer and a tiny Qwen2 model, run CPT, SFT and RL with the step "
        "reward, evaluate on held-out targets, sweep the step bounds, serve and probe the model, and write "
        "a report. --quick finishes in about 10 minutes on 2 cores. A rerun resumes finished stages.",
    )
    add_arguments(p, DemoConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from steiner.config import config_from_args
    from steiner.demo import DemoConfig, main, resolve

    cfg = config_from_args(DemoConfig, args)
    explicit = {k[len("cfg__"):] for k in vars(args) if k.startswith("cfg__")}
    main(resolve(cfg, explicit))
    return 0
