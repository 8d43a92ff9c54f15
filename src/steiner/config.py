"""Config dataclasses <-> YAML files and CLI flags, with errors that name the bad key or value.

Every option is documented once, in its field's ``help``: ``opt(default, "what it does")``. The same
text serves ``--help``, the option tables in docs/ (`options_table`) and error messages.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file, key or value that cannot be used; the message names it."""


def opt(default: Any = dataclasses.MISSING, help: str = "", **kw: Any) -> Any:  # noqa: A002
    """A dataclass field with its one line of documentation; mutable defaults are copied per instance."""
    if isinstance(default, list | dict | set):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Convert a YAML or CLI value to the field type, or raise ConfigError naming the field."""
    base, optional = _strip_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{name}: a value is required (got none)")
    origin = get_origin(base)
    try:
        if origin is Literal:
            choices = get_args(base)
            if value not in choices:
                raise ConfigError(f"{name}: must be one of {list(choices)}, got {value!r}")
            return value
        if origin in (list, tuple):
            (inner,) = get_args(base)[:1] or (str,)
            if isinstance(value, str):
                value = [v for v in value.split(",") if v != ""]
            if not isinstance(value, list | tuple):
                raise ConfigError(f"{name}: expected a list, got {value!r}")
            return [_coerce(f"{name}[{i}]", inner, v) for i, v in enumerate(value)]
        if origin is dict or base is dict:
            if not isinstance(value, dict):
                raise ConfigError(f"{name}: expected a mapping, got {value!r}")
            return value
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
                return value.lower() in ("true", "1", "yes", "on")
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ConfigError(f"{name}: expected an integer, got {value!r}")
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ConfigError(f"{name}: expected a number, got {value!r}")
            return float(value)
        if base is str:
            return str(value)
        if base is Path:
            return Path(value)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{name}: cannot read {value!r} as {getattr(base, '__name__', base)}") from e
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, source: str = "config") -> T:
    """Build ``cls`` from a mapping; unknown keys raise ConfigError naming them and the source."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of options, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {unknown} for {cls.__name__}; known keys: {sorted(names)}"
        )
    hints = _hints(cls)
    values = {k: _coerce(k, hints[k], v) for k, v in data.items()}
    try:
        return cls(**values)
    except TypeError as e:
        raise ConfigError(f"{source}: {e}") from e


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from e
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Read ``cls`` from an optional YAML file, then apply ``overrides`` (e.g. CLI flags)."""
    data = load_yaml(path) if path else {}
    source = str(path) if path else "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of options, got {type(data).__name__}")
    data = {**data, **(overrides or {})}
    return from_dict(cls, data, source=source)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A YAML/JSON-ready dict of a config (paths as strings)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = str(v) if isinstance(v, Path) else v
    return out


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, config_flag: bool = True) -> None:
    """Add ``--config FILE.yaml`` and one ``--field-name`` flag per field of ``cls``."""
    if config_flag:
        parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of options; flags override it")
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        )
        base, _ = _strip_optional(hints[f.name])
        metavar = f.name.upper()
        extra: dict[str, Any] = {}
        if get_origin(base) is Literal:
            metavar = "{" + ",".join(map(str, get_args(base))) + "}"
        elif base is bool:
            metavar, extra = "BOOL", {"nargs": "?", "const": True}  # `--flag` alone means true
        elif get_origin(base) in (list, tuple):
            metavar = "A,B,..."
        help_text = f.metadata.get("help", "")
        help_text = f"{help_text} (default: {default!r})" if help_text else f"(default: {default!r})"
        help_text = help_text.replace("%", "%%")  # argparse expands %-formats in help ("20% of ...")
        parser.add_argument(flag, dest=f"cfg__{f.name}", default=argparse.SUPPRESS, metavar=metavar,
                            help=help_text, **extra)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _as_flag_value(value: Any) -> str:
    """A default as it would be typed on the command line (or in YAML)."""
    if value is dataclasses.MISSING:
        return "(required)"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value)) if value else "(empty)"
    if isinstance(value, dict):
        import json

        return json.dumps(value) if value else "{}"
    if isinstance(value, str) and value == "":
        return '""'
    return str(value)


def options_table(cls: type, *, exclude: type | None = None) -> str:
    """A Markdown table of the options of ``cls``: flag, default, and the field's ``help``.

    Fields that ``exclude`` (a base class documented elsewhere) has with the same default and help are
    left out; a field the subclass redefines stays.
    """
    base_fields = {f.name: f for f in dataclasses.fields(exclude)} if exclude is not None else {}
    hints = _hints(cls)
    rows = ["| option | default | what it does |", "|---|---|---|"]
    for f in dataclasses.fields(cls):
        b = base_fields.get(f.name)
        if b is not None and _default(b) == _default(f) and b.metadata.get("help") == f.metadata.get("help"):
            continue
        base, _ = _strip_optional(hints[f.name])
        help_text = f.metadata.get("help", "")
        if get_origin(base) is Literal:
            choices = " | ".join(map(str, get_args(base)))
            help_text = f"{help_text} ({choices})" if help_text else choices
        cells = [f"`--{f.name.replace('_', '-')}`", f"`{_as_flag_value(_default(f))}`", help_text]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Build ``cls`` from parsed args: the ``--config`` file first, then the flags given."""
    overrides = {k[len("cfg__") :]: v for k, v in vars(args).items() if k.startswith("cfg__")}
    return load_config(cls, getattr(args, "config", None), overrides)


def check_range(name: str, value: float | int | None, *, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False) -> None:
    """Raise ConfigError naming ``name`` when ``value`` is outside [lo, hi] (or (lo, hi] with lo_open)."""
    if value is None:
        return
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ConfigError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{name} must be <= {hi}, got {value!r}")


def add_command(sub: argparse._SubParsersAction, name: str, cls: type[T], main: Any, *, help: str,  # noqa: A002
                description: str | None = None) -> argparse.ArgumentParser:
    """A ``steiner NAME`` subcommand whose options are the fields of ``cls``; it runs ``main(cfg)``.

    The exit code is what ``main`` returns when that is an int, else 0.
    """
    p = sub.add_parser(name, help=help, description=description)
    add_arguments(p, cls)

    def run(args: argparse.Namespace) -> int:
        out = main(config_from_args(cls, args))
        return out if isinstance(out, int) and not isinstance(out, bool) else 0

    p.set_defaults(func=run)
    return p
