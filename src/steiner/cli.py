"""The `steiner` command. Each subcommand lives in ``steiner.commands.<name>`` and exposes
``register(subparsers)``; a subcommand whose module is not there is simply absent."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# (subcommand, module) in the order `steiner --help` lists them
COMMANDS = [
    ("demo", "steiner.commands.demo"),
    ("synth", "steiner.commands.synth"),
    ("train", "steiner.commands.train"),
    ("generate", "steiner.commands.generate"),
    ("eval", "steiner.commands.eval"),
    ("sweep", "steiner.commands.sweep"),
    ("compare", "steiner.commands.compare"),
    ("serve", "steiner.commands.serve"),
    ("probe", "steiner.commands.probe"),
    ("tokenizer", "steiner.commands.tokenizer"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steiner",
        description="Turn a base language model into an o1-style reasoner with the Steiner recipe.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _name, module in COMMANDS:
        if importlib.util.find_spec(module) is None:
            continue
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from steiner.config import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except (ConfigError, FileNotFoundError, NotADirectoryError, ValueError) as e:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {e}")
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
