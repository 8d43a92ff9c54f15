"""`steiner synth [truncate | dag | sample | run]`: synthesise reasoning data.

Stages (each reads the files the one before wrote to ``--out DIR``, and can be rerun alone):
``truncate`` (questions -> problems.jsonl, steps.jsonl), ``dag`` (answer checks, clustering ->
dags.jsonl), ``sample`` (-> paths.jsonl, stats.json, reasoning_tokens.png). ``run``, or no stage,
does all three. The pipeline itself is `steiner.synth.pipeline`.
"""

from __future__ import annotations

import argparse

from steiner.synth.pipeline import STAGES, SynthConfig, main

__all__ = ["SynthConfig", "main", "register"]  # `from steiner.commands.synth import SynthConfig, main` still works

_HELP = {
    "truncate": "stage 1: questions -> problems.jsonl, steps.jsonl (method one, resumable)",
    "dag": "stage 2: answer checks and clustering -> dags.jsonl",
    "sample": "stage 3: backtracking paths -> paths.jsonl, stats.json",
    "run": "all three stages (the default)",
}


def register(sub: argparse._SubParsersAction) -> None:
    from steiner.config import add_arguments, config_from_args

    p = sub.add_parser("synth", help="synthesise reasoning data (truncation + DAGs)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p, SynthConfig)
    stages = p.add_subparsers(dest="synth_stage", metavar="STAGE")
    for name in STAGES:
        sp = stages.add_parser(name, help=_HELP[name], description=_HELP[name])
        # flags may come before or after the stage; SUPPRESS keeps the stage parser from erasing them
        sp.add_argument("--config", metavar="FILE.yaml", default=argparse.SUPPRESS,
                        help="YAML file of options; flags override it")
        add_arguments(sp, SynthConfig, config_flag=False)

    def run(args: argparse.Namespace) -> int:
        STAGES[getattr(args, "synth_stage", None) or "run"](config_from_args(SynthConfig, args))
        return 0

    p.set_defaults(func=run)
