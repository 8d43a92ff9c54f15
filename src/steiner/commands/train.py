"""`steiner train cpt|sft|rl --config FILE.yaml [--field-name value ...]`.

Runs as one process, or under `accelerate launch` / `torchrun` for data-parallel training: the
HF Trainer picks the process group up from the environment.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util

# (stage, module, config class, help)
STAGES = [
    ("cpt", "steiner.train.cpt", "CPTConfig", "continual pre-training on text + rendered reasoning paths"),
    ("sft", "steiner.train.sft", "SteinerSFTConfig", "supervised fine-tuning on chat-formatted reasoning paths"),
    ("rl", "steiner.train.rl", "RLConfig",
     "reinforcement learning with step-level rewards on TRL's GRPOTrainer (other GRPOConfig options: --trl)"),
]


def _config_class(module: str, name: str) -> type:
    return getattr(importlib.import_module(module), name)


def register(sub: argparse._SubParsersAction) -> None:
    from steiner.config import add_arguments

    p = sub.add_parser(
        "train",
        help="train a model: cpt, sft or rl",
        description="Train in three stages (CPT, SFT, RL). Options come from --config FILE.yaml, then the "
        "flags given. Multi-GPU: `accelerate launch -m steiner.cli train ...` or `torchrun -m steiner.cli ...`.",
    )
    tsub = p.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for stage, module, cls_name, help_text in STAGES:
        if importlib.util.find_spec(module) is None:
            continue  # e.g. RL not installed yet
        cls = _config_class(module, cls_name)
        sp = tsub.add_parser(stage, help=help_text, description=f"{help_text}. {cls.__doc__ or ''}")
        add_arguments(sp, cls)
        sp.set_defaults(func=run, train_module=module, train_config=cls_name)


def run(args: argparse.Namespace) -> int:
    """Build the stage's config from the YAML file and flags, then run its ``main(cfg)``."""
    from rich.console import Console

    from steiner.config import config_from_args

    cls = _config_class(args.train_module, args.train_config)
    cfg = config_from_args(cls, args)
    out = importlib.import_module(args.train_module).main(cfg)
    if _is_main_process():
        Console(stderr=True).print(f"[bold green]saved[/] {out}")
    return 0


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"
