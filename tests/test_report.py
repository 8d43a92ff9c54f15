"""Report helpers: Markdown tables, JSON, PNG plots, the HTML page."""

from __future__ import annotations

import json
from pathlib import Path

from steiner.report import Series, markdown_table, markdown_to_html, plot, write_html, write_json


def test_markdown_table() -> None:
    rows = [{"name": "a|b", "acc": 0.51234, "n": 3, "note": None}, {"name": "c", "acc": 1.0, "n": 10, "note": True}]
    md = markdown_table(rows, ["name", "acc", "n", "note"], headers={"acc": "accuracy"})
    lines = md.strip().splitlines()
    assert lines[0] == "| name | accuracy | n | note |"
    assert lines[1] == "|---|---:|---:|---|"
    assert lines[2] == "| a\\|b | 0.512 | 3 | - |"
    assert lines[3] == "| c | 1.000 | 10 | yes |"
    assert markdown_table([]) == "_(no rows)_\n"


def test_write_json_converts_paths(tmp_path: Path) -> None:
    p = write_json(tmp_path / "sub" / "r.json", {"path": tmp_path, "x": [1, 2]})
    assert json.loads(p.read_text()) == {"path": str(tmp_path), "x": [1, 2]}


def test_plot_writes_png(tmp_path: Path) -> None:
    p = plot(tmp_path / "p.png", [Series([1, 2, 3], [0.1, None, 0.3], label="s", labels=["a", "b", "c"]),
                                  Series([1, 2], [0.2, 0.2], style="x--")],
             xlabel="x", ylabel="y", title="t")
    data = p.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_html_page(tmp_path: Path) -> None:
    md = "# Title\n\nSome `code` and **bold**.\n\n" + markdown_table([{"a": 1, "b": "x"}]) + "\n- one\n- two\n"
    html = markdown_to_html(md)
    assert "<h1>Title</h1>" in html and "<code>code</code>" in html and "<strong>bold</strong>" in html
    assert "<table>" in html and '<td style="text-align:right">1</td>' in html and "<li>two</li>" in html
    page = write_html(tmp_path / "r.html", md, title="T", images=["plot.png"]).read_text()
    assert page.startswith("<!doctype html>") and '<img alt="plot" src="plot.png">' in page
