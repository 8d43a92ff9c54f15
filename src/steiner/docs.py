"""Keep the option tables in docs/*.md in step with the config dataclasses.

A page marks where a table goes; everything between the two comments is generated from the fields'
``opt(default, help)`` (`steiner.config.options_table`), so an option is documented once, in code:

    <!-- options: steiner.serve.config:ServeConfig -->
    <!-- /options -->

``exclude=module:Base`` leaves out the fields a base class (documented on its own) has unchanged.
``python -m steiner.docs`` rewrites the tables; ``--check`` lists stale pages and exits 1 (the test
suite runs the check).
"""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

MARKER = re.compile(r"(<!-- options: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- /options -->)", re.S)
REPO = Path(__file__).resolve().parents[2]


def _load(ref: str) -> type:
    """``module:Class`` -> the class; a clear error when either is missing."""
    module, _, name = ref.partition(":")
    if not name:
        raise ValueError(f"options marker: {ref!r} is not module:Class")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"options marker: cannot load {ref!r}: {e}") from e


def render(text: str, *, where: str = "page") -> str:
    """``text`` with every options table regenerated."""
    from steiner.config import options_table

    def table(m: re.Match) -> str:
        ref, *rest = m.group("spec").split()
        kw = dict(r.split("=", 1) for r in rest)
        unknown = set(kw) - {"exclude"}
        if unknown:
            raise ValueError(f"{where}: unknown option(s) {sorted(unknown)} in marker for {ref}")
        exclude = _load(kw["exclude"]) if "exclude" in kw else None
        return m.group(1) + options_table(_load(ref), exclude=exclude) + m.group(4)

    return MARKER.sub(table, text)


def pages(root: Path = REPO) -> list[Path]:
    """The pages that may hold tables: README.md and docs/*.md."""
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.is_file()]


def main(check: bool = False, root: Path = REPO) -> list[Path]:
    """Regenerate the tables (or, with ``check``, only find pages whose tables are stale); return those pages."""
    stale = []
    for p in pages(root):
        text = p.read_text(encoding="utf-8")
        new = render(text, where=str(p))
        if new != text:
            stale.append(p)
            if not check:
                p.write_text(new, encoding="utf-8")
    return stale


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only report stale pages (exit 1 if any)")
    ap.add_argument("--root", type=Path, default=REPO, help="repository root (default: this checkout)")
    args = ap.parse_args()
    changed = main(args.check, args.root)
    for p in changed:
        print(f"{'stale' if args.check else 'updated'}: {p}")
    raise SystemExit(1 if args.check and changed else 0)
