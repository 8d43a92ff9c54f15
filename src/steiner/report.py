"""Report helpers shared by eval, sweep, probe and the demo: Markdown tables, JSON, PNG plots, HTML.

Everything here is generic: rows are dicts, plots take named series, and the HTML page is built
from the same Markdown the reports write, with the plots inlined as images.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def format_value(value: Any, floatfmt: str = ".3f") -> str:
    """A table cell: floats with ``floatfmt``, None as "-", everything else as str."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return format(value, floatfmt)
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, *,
                   headers: dict[str, str] | None = None, floatfmt: str = ".3f") -> str:
    """A GitHub Markdown table of ``rows``; ``columns`` picks and orders keys (default: first row's)."""
    if not rows:
        return "_(no rows)_\n"
    cols = list(columns) if columns is not None else list(rows[0])
    headers = headers or {}
    numeric = {c: all((isinstance(r.get(c), int | float) and not isinstance(r.get(c), bool)) or r.get(c) is None
                      for r in rows) for c in cols}

    def cell(v: Any) -> str:
        return format_value(v, floatfmt).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers.get(c, c) for c in cols) + " |",
             "|" + "|".join("---:" if numeric[c] else "---" for c in cols) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(o)
    return str(o)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (paths, numpy values and dataclasses converted); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj, indent=2, default=_json_default, ensure_ascii=False) + "\n", encoding="utf-8")
    return p


@dataclass
class Series:
    """One line or set of points on a plot; ``labels`` annotate points one by one."""

    x: Sequence[float]
    y: Sequence[float]
    label: str = ""
    labels: Sequence[str] | None = None
    style: str = "o-"
    extra: dict[str, Any] = field(default_factory=dict)


def plot(path: str | Path, series: Sequence[Series], *, xlabel: str = "", ylabel: str = "", title: str = "",
         xlog: bool = False, ylim: tuple[float, float] | None = None,
         xticks: Sequence[tuple[float, str]] | None = None) -> Path:
    """Draw ``series`` into a PNG with matplotlib's Agg backend (no display needed); returns the path.

    ``xticks`` places labelled ticks, e.g. [(1, "1"), (16, "inf")].
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    try:
        for s in series:
            xs = [float("nan") if v is None else v for v in s.x]
            ys = [float("nan") if v is None else v for v in s.y]
            ax.plot(xs, ys, s.style, label=s.label or None, **s.extra)
            for x, y, lab in zip(xs, ys, s.labels or [], strict=False):
                if lab and not (math.isnan(x) or math.isnan(y)):
                    ax.annotate(lab, (x, y), textcoords="offset points", xytext=(4, 5), fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title)
        if xlog:
            ax.set_xscale("log")
        if ylim:
            ax.set_ylim(*ylim)
        if xticks:
            ax.set_xticks([t for t, _ in xticks], [lab for _, lab in xticks])
        ax.grid(alpha=0.3)
        if any(s.label for s in series):
            ax.legend()
        fig.tight_layout()
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p)
    finally:
        plt.close(fig)
    return p


# ---------------------------------------------------------------- Markdown -> HTML (the subset we write)


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", r'<img alt="\1" src="\2">', text)
    text = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"(?<![\w*])_([^_]+)_(?![\w*])", r"<em>\1</em>", text)
    return text


def _split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [c.strip().replace("\\|", "|") for c in cells]


def markdown_to_html(md: str) -> str:
    """Convert the Markdown our reports use (headings, paragraphs, lists, tables, code, images) to HTML."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append("<pre><code>" + html.escape("\n".join(lines[i + 1 : j])) + "</code></pre>")
            i = j + 1
            continue
        m = re.match(r"(#{1,6})\s+(.*)", line)
        if m:
            n = len(m.group(1))
            out.append(f"<h{n}>{_inline(m.group(2))}</h{n}>")
        elif line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|[\s:|-]+\|?$", lines[i + 1]):
            head = _split_row(line)
            aligns = ["right" if c.endswith(":") else "left" for c in _split_row(lines[i + 1])]
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_split_row(lines[i]))
                i += 1
            th = "".join(f'<th style="text-align:{a}">{_inline(h)}</th>' for h, a in zip(head, aligns, strict=False))
            body = "".join(
                "<tr>" + "".join(f'<td style="text-align:{a}">{_inline(c)}</td>' for c, a in zip(r, aligns, strict=False))
                + "</tr>" for r in rows
            )
            out.append(f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>")
            continue
        elif re.match(r"\s*[-*] ", line):
            items = []
            while i < len(lines) and re.match(r"\s*[-*] ", lines[i]):
                items.append("<li>" + _inline(re.sub(r"^\s*[-*] ", "", lines[i])) + "</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.strip():
            para = [line]
            while i + 1 < len(lines) and lines[i + 1].strip() and not re.match(r"(#|\||```|\s*[-*] )", lines[i + 1]):
                i += 1
                para.append(lines[i])
            out.append("<p>" + _inline(" ".join(para)) + "</p>")
        i += 1
    return "\n".join(out)


_CSS = ("body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em}"
        "th{background:#f3f3f3}img{max-width:100%}code{background:#f5f5f5;padding:0 .2em}"
        "pre{background:#f5f5f5;padding:.6em;overflow:auto}")


def write_html(path: str | Path, markdown: str, *, title: str = "steiner report",
               images: Sequence[str | Path] = ()) -> Path:
    """A self-contained HTML page of ``markdown``; ``images`` (paths relative to the page or absolute)
    are appended under a "Figures" heading unless the Markdown already shows them."""
    p = Path(path)
    md = markdown
    extra = [str(im) for im in images if str(im) not in markdown]
    if extra:
        md += "\n\n## Figures\n\n" + "\n\n".join(f"![{Path(im).stem}]({im})" for im in extra) + "\n"
    page = (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n{markdown_to_html(md)}\n</body></html>\n")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(page, encoding="utf-8")
    return p
