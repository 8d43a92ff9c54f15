"""Config dataclasses from YAML and flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

import pytest

from steiner.config import ConfigError, add_arguments, check_range, config_from_args, load_config, opt


@dataclass
class Demo:
    steps: int = opt(3, "how many")
    rate: float = opt(0.5, "a rate")
    name: str | None = opt(None, "a name")
    flags: list[int] = opt([1, 2], "numbers")
    mode: Literal["a", "b"] = opt("a", "a mode")
    on: bool = opt(False, "a switch")

    def __post_init__(self) -> None:
        check_range("steps", self.steps, lo=1)


def parse(argv, tmp_yaml=None):
    p = argparse.ArgumentParser()
    add_arguments(p, Demo)
    return config_from_args(Demo, p.parse_args(argv))


def test_yaml_then_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 5\nrate: 0.25\nflags: [4, 5]\n")
    cfg = parse(["--config", str(f), "--rate", "0.75", "--on", "--mode", "b", "--name", "x"])
    assert (cfg.steps, cfg.rate, cfg.flags, cfg.on, cfg.mode, cfg.name) == (5, 0.75, [4, 5], True, "b", "x")
    assert parse(["--flags", "7,8", "--on", "false"]).flags == [7, 8]
    assert parse(["--on", "false"]).on is False


def test_errors_name_the_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("stepz: 5\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['stepz'\]"):
        load_config(Demo, f)
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        load_config(Demo, None, {"steps": 0})
    with pytest.raises(ConfigError, match="steps: expected an integer"):
        load_config(Demo, None, {"steps": 2.5})
    with pytest.raises(ConfigError, match="mode: must be one of"):
        load_config(Demo, None, {"mode": "c"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Demo, tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("steps: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Demo, tmp_path / "bad.yaml")


def test_mutable_defaults_are_per_instance():
    a, b = Demo(), Demo()
    a.flags.append(9)
    assert b.flags == [1, 2]


def test_every_command_help_renders():
    """`steiner X --help` formats every option's help: a bare "%" in a help text once crashed
    `steiner demo --help` (argparse expands %-formats)."""
    import argparse

    from steiner.cli import build_parser

    helps: dict[str, str] = {}

    def walk(parser: argparse.ArgumentParser) -> None:
        helps[parser.prog] = parser.format_help()  # raised TypeError on a bare "%"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    walk(build_parser())
    assert len(helps) > 9 and all(h.startswith("usage:") for h in helps.values())
    assert "20% of held-out searches" in helps["steiner demo"]
