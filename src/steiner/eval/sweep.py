"""`steiner sweep`: inference-time scaling over a grid of (min_steps, max_steps).

Every cell is an evaluation with its own step bounds, all sharing one ``samples.jsonl`` (samples are
keyed by their settings) and one loaded model. Out come a table, ``report.md``/``report.json``/
``report.html`` and two plots: accuracy against mean reasoning tokens (one labelled point per cell)
and accuracy against max_steps (one line per min_steps).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steiner.config import ConfigError, opt, to_dict
from steiner.eval.metrics import summarize
from steiner.eval.runner import EvalConfig, evaluate, make_backend
from steiner.eval.tasks import load_items, resolve_task


def _parse_bound(text: str, what: str) -> int | None:
    t = text.strip().lower()
    if t in ("", "none", "inf", "-"):
        return None
    try:
        v = int(t)
    except ValueError as e:
        raise ConfigError(f"{what}: {text!r} is not an integer (or 'none')") from e
    if v < 0:
        raise ConfigError(f"{what}: {v} is negative")
    return v


def parse_grid(grid: str) -> list[tuple[int, int | None]]:
    """"0:4,2:6,4:none" -> [(0, 4), (2, 6), (4, None)]; each cell min_steps:max_steps."""
    cells = []
    for part in grid.split(","):
        if not part.strip():
            continue
        if ":" not in part:
            raise ConfigError(f"grid: cell {part.strip()!r} is not MIN:MAX (e.g. 0:4)")
        lo, hi = part.split(":", 1)
        cells.append((_parse_bound(lo, "grid min_steps") or 0, _parse_bound(hi, "grid max_steps")))
    return cells


@dataclass
class SweepConfig(EvalConfig):
    """`steiner sweep`: the eval options, with step bounds as a grid or as lists crossed with each other."""

    grid: str | None = opt(None, "cells MIN:MAX separated by commas, e.g. '0:4,2:6,4:8' ('none' = unbounded)")
    min_steps: str = opt("0", "comma-separated min_steps values, crossed with --max-steps (ignored with --grid)")  # type: ignore[assignment]
    max_steps: str = opt("none", "comma-separated max_steps values ('none' = unbounded), crossed with --min-steps")  # type: ignore[assignment]
    out: str = opt("runs/sweep", "output folder: samples.jsonl (shared cache), report.md/json/html, plots")

    def _check_steps(self) -> None:
        cells = self.cells()
        if not cells:
            raise ConfigError("the sweep has no cells; give --grid or --min-steps/--max-steps")
        for lo, hi in cells:
            if hi is not None and (hi < 1 or lo > hi):
                raise ConfigError(f"grid cell {lo}:{hi}: need 1 <= max_steps and min_steps <= max_steps")

    def cells(self) -> list[tuple[int, int | None]]:
        """The (min_steps, max_steps) cells, in order, duplicates dropped."""
        if self.grid:
            cells = parse_grid(self.grid)
        else:
            los = [_parse_bound(x, "min_steps") or 0 for x in str(self.min_steps).strip("[]").split(",") if x.strip()]
            his = [_parse_bound(x, "max_steps") for x in str(self.max_steps).strip("[]").split(",") if x.strip()] or [None]
            cells = [(lo, hi) for lo in los for hi in his if hi is None or lo <= hi]
        return list(dict.fromkeys(cells))

    def cell_config(self, min_steps: int, max_steps: int | None) -> EvalConfig:
        """The EvalConfig of one grid cell."""
        names = {f.name for f in dataclasses.fields(EvalConfig)}
        values = {k: v for k, v in to_dict(self).items() if k in names}
        return EvalConfig(**{**values, "min_steps": min_steps, "max_steps": max_steps})


def _label(lo: int, hi: int | None) -> str:
    return f"{lo}:{'inf' if hi is None else hi}"


def sweep_markdown(report: dict[str, Any]) -> str:
    from steiner.report import markdown_table

    n = report["n"]
    cols = ["cell", "min_steps", "max_steps", "pass@1", f"maj@{n}", "format_valid", "mean_reasoning_tokens",
            "mean_steps", "mean_backtracks", "num_failed"]
    lines = [f"# Step sweep: {report['task']}", "",
             f"- model: `{report['model']}` ({report['backend']})", f"- data: `{report['source']}`",
             f"- questions: {report['num_questions']}, samples per question and cell: {n}",
             "- settings: " + ", ".join(f"{k}={v}" for k, v in report["settings"].items()), "",
             "## Accuracy by (min_steps, max_steps)", "",
             markdown_table([{**c, "max_steps": "none" if c["max_steps"] is None else c["max_steps"]}
                             for c in report["cells"]], cols, headers={"mean_reasoning_tokens": "reasoning tokens",
                                                            "mean_steps": "steps", "mean_backtracks": "backtracks"}),
             "## Plots", ""]
    lines += [f"![{Path(p).stem}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def write_plots(report: dict[str, Any], out: Path) -> list[str]:
    """accuracy_vs_tokens.png (a labelled point per cell) and accuracy_vs_max_steps.png (a line per min_steps)."""
    from steiner.report import Series, plot

    cells = report["cells"]
    ylim = (-0.03, 1.03)
    # cells that land on the same point share one label instead of overprinting each other
    points: dict[tuple, list[str]] = {}
    for c in cells:
        x = c["mean_reasoning_tokens"]
        points.setdefault((None if x is None else round(x, 6), round(c["pass@1"], 6)), []).append(c["cell"])
    p1 = plot(out / "accuracy_vs_tokens.png",
              [Series([x for x, _ in points], [y for _, y in points], labels=[", ".join(v) for v in points.values()],
                      style="o")],
              xlabel="mean reasoning tokens per answer", ylabel="pass@1", ylim=ylim,
              title=f"{report['task']}: accuracy vs reasoning length (labels: min:max steps)")
    finite = sorted({c["max_steps"] for c in cells if c["max_steps"] is not None})
    inf_x = max(finite) * 2 if finite else 1  # unbounded cells sit to the right of the largest bound
    series = []
    for lo in sorted({c["min_steps"] for c in cells}):
        row = sorted((c for c in cells if c["min_steps"] == lo),
                     key=lambda c: inf_x if c["max_steps"] is None else c["max_steps"])
        series.append(Series([inf_x if c["max_steps"] is None else c["max_steps"] for c in row],
                             [c["pass@1"] for c in row], label=f"min_steps={lo}"))
    ticks = [(float(v), str(v)) for v in finite]
    if any(c["max_steps"] is None for c in cells):
        ticks.append((float(inf_x), "none"))
    p2 = plot(out / "accuracy_vs_max_steps.png", series, xlabel="max_steps", ylabel="pass@1", ylim=ylim,
              xticks=ticks, title=f"{report['task']}: accuracy vs max_steps")
    return [p1.name, p2.name]


def main(cfg: SweepConfig, *, backend: Any = None) -> dict[str, Any]:
    """Run every cell, then write report.json, report.md, report.html and the plots into ``cfg.out``."""
    from rich.console import Console

    from steiner.report import write_html, write_json

    spec = resolve_task(cfg.task, cfg.data, answer_type=cfg.answer_type, split=cfg.split)
    items = load_items(spec, cfg.limit)
    first = cfg.cell_config(*cfg.cells()[0])
    backend = backend or make_backend(first)
    out = Path(cfg.out)
    rows = []
    for lo, hi in cfg.cells():
        ccfg = cfg.cell_config(lo, hi)
        samples = evaluate(spec, items, backend, ccfg.settings(), cfg.n, out / "samples.jsonl",
                           system_prompt=ccfg.system_message(), label=f"cell {_label(lo, hi)}")
        rows.append({"cell": _label(lo, hi), "min_steps": lo, "max_steps": hi,
                     "settings_key": ccfg.settings().key(ccfg.system_message()), **summarize(samples)})
    desc = backend.describe()
    settings = dataclasses.asdict(first.settings())
    settings.pop("min_steps")
    settings.pop("max_steps")
    report: dict[str, Any] = {
        "task": spec.name, "answer_type": spec.answer_type, "source": spec.path, "backend": desc["backend"],
        "model": desc["model"], "base_url": desc.get("base_url"), "n": cfg.n, "num_questions": len(items),
        "settings": settings, "cells": rows, "config": to_dict(cfg),
    }
    report["plots"] = write_plots(report, out)
    write_json(out / "report.json", report)
    md = sweep_markdown(report)
    (out / "report.md").write_text(md, encoding="utf-8")
    write_html(out / "report.html", md, title=f"steiner sweep: {spec.name}")
    best = max(rows, key=lambda r: r["pass@1"])
    Console(stderr=True).print(f"[bold]sweep {spec.name}[/]: {len(rows)} cells; best pass@1 {best['pass@1']:.3f} "
                               f"at {best['cell']} -> {out / 'report.md'}")
    return report
