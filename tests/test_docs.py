"""The README and docs/: generated option tables are current, references resolve, the README stays short."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from steiner import docs
from steiner.config import opt, options_table

ROOT = Path(__file__).resolve().parents[1]


def test_every_option_table_is_current():
    stale = docs.main(check=True, root=ROOT)
    assert not stale, f"stale option tables in {[str(p) for p in stale]}: run `.venv/bin/python -m steiner.docs`"


@dataclass
class _Base:
    seed: int = opt(0, "seed")
    out: str = opt("runs/x", "output folder")


@dataclass
class _Cfg(_Base):
    out: str = opt("runs/y", "output folder")  # redefined default: documented again
    sizes: list[int] = opt([1, 2], "sizes: a|b")
    name: str | None = opt(None, "a name")
    mode: Literal["fast", "slow"] = opt("fast", "how")
    strict: bool = opt(False, "")


def test_options_table_from_the_fields_help():
    assert options_table(_Cfg, exclude=_Base).splitlines() == [
        "| option | default | what it does |",
        "|---|---|---|",
        "| `--out` | `runs/y` | output folder |",
        "| `--sizes` | `1,2` | sizes: a\\|b |",
        "| `--name` | `none` | a name |",
        "| `--mode` | `fast` | how (fast \\| slow) |",
        "| `--strict` | `false` |  |",
    ]
    assert "| `--seed` | `0` | seed |" in options_table(_Cfg)


def test_a_stale_table_is_regenerated_and_other_text_kept(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # the marker names this module
    page = ("# Page\n\nintro\n\n<!-- options: test_docs:_Cfg exclude=test_docs:_Base -->\n"
            "| old | table |\n<!-- /options -->\n\nafter\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "p.md").write_text(page)
    assert docs.main(check=True, root=tmp_path) == [tmp_path / "docs" / "p.md"]
    assert (tmp_path / "docs" / "p.md").read_text() == page  # check writes nothing
    docs.main(root=tmp_path)
    new = (tmp_path / "docs" / "p.md").read_text()
    assert new == page.replace("| old | table |\n", options_table(_Cfg, exclude=_Base))
    assert docs.main(check=True, root=tmp_path) == []


def test_a_marker_naming_a_missing_class_is_an_error_naming_it():
    with pytest.raises(ValueError, match="steiner.config:NoSuchConfig"):
        docs.render("<!-- options: steiner.config:NoSuchConfig -->\n<!-- /options -->\n")


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_no_dangling_references():
    missing = []
    # code and docs that name a docs page
    for f in [*sorted((ROOT / "src").rglob("*.py")), *_markdown_files()]:
        for page in re.findall(r"\bdocs/[\w.-]+\.md\b", f.read_text(encoding="utf-8")):
            if not (ROOT / page).is_file():
                missing.append(f"{f.relative_to(ROOT)} -> {page}")
    # relative links in the README and the docs pages
    for f in _markdown_files():
        for target in re.findall(r"\]\(([^)\s]+)\)", f.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (f.parent / target.split("#")[0]).exists():
                missing.append(f"{f.relative_to(ROOT)} -> {target}")
    assert not missing, missing


def test_readme_is_short_and_opens_with_the_two_setup_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    assert first_block == ("bash scripts/setup.sh && .venv/bin/steiner demo --quick\n"
                           "bash scripts/setup.sh && .venv/bin/python -m pytest -q\n")
    # every stage's page is linked from the README
    for page in ("format", "tokenizer", "synth", "train", "infer", "eval", "serve", "probe", "demo", "benchmarks"):
        assert f"(docs/{page}.md)" in text, page
