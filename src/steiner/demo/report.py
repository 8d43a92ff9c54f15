"""The demo's report: report.md and report.html (tables, plots) under the output folder, and the terminal summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steiner.report import Series, markdown_table, plot, write_html

if TYPE_CHECKING:
    from rich.console import Console

STUDY = [
    ("a_sft_optimal", "(a) SFT on optimal paths only"),
    ("b_sft_dag", "(b) SFT on DAG paths with backtracking"),
    ("c_rl_step", "(c) (b) + RL, step-level reward"),
    ("d_rl_outcome", "(d) (b) + RL, outcome reward only"),
]


def _stage(summary: dict[str, Any], name: str) -> dict[str, Any] | None:
    for s in summary["stages"]:
        if s["name"] == name:
            return s
    return None


def _result(summary: dict[str, Any], name: str) -> dict[str, Any]:
    s = _stage(summary, name)
    return s["result"] if s else {}


def _maj_key(m: dict[str, Any]) -> str:
    return next((k for k in m if k.startswith("maj@")), "maj@n")


def eval_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, label in (("eval_sft", "SFT (DAG paths)"), ("eval_rl_step", "SFT + RL (step reward)")):
        m = _result(summary, name)
        if m:
            rows.append({"model": label, "pass@1": m.get("pass@1"), _maj_key(m): m.get(_maj_key(m)),
                         "format valid": m.get("format_valid"), "reasoning tokens": m.get("mean_reasoning_tokens"),
                         "steps": m.get("mean_steps"), "backtracks": m.get("mean_backtracks")})
    return rows


def study_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, label in STUDY:
        free, bounded = _result(summary, f"study_{key}_free"), _result(summary, f"study_{key}_bounded")
        if not free:
            continue
        mk = _maj_key(free)
        rows.append({"condition": label, "pass@1": free.get("pass@1"), mk: free.get(mk),
                     "pass@1 bounded": bounded.get("pass@1"), f"{mk} bounded": bounded.get(mk),
                     "format valid": free.get("format_valid"), "steps verified": free.get("steps_verified"),
                     "steps": free.get("mean_steps"), "backtracks": free.get("mean_backtracks")})
    return rows


def sweep_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    cells = _result(summary, "sweep").get("cells", [])
    return [{"min_steps": c.get("min_steps", 0),
             "max_steps": c.get("max_steps") if c.get("max_steps") is not None else "none",
             "pass@1": c.get("pass@1"), _maj_key(c): c.get(_maj_key(c)),
             "reasoning tokens": c.get("mean_reasoning_tokens"), "steps": c.get("mean_steps"),
             "backtracks": c.get("mean_backtracks")} for c in cells]


def write_report(root: Path, summary: dict[str, Any]) -> Path:
    """Write report.md and report.html (plots inlined) under ``root``; return the HTML path."""
    md = ["# steiner demo report", ""]
    hw = summary["hardware"]
    md += [f"Ran on {hw.get('cpu', 'unknown CPU')} ({hw.get('cpu_count')} cores, {hw.get('memory_gib')} GiB, "
           f"GPU: {hw.get('gpu') or 'none'}) in {summary['wall_seconds'] / 60:.1f} minutes "
           f"(stages skipped because already complete count their original time below).", ""]
    synth = _result(summary, "synth")
    if synth:
        md += ["## Data synthesis", "", markdown_table([{k: v for k, v in synth.items() if not isinstance(v, dict | list)}]), ""]
        png = root / "synth" / "reasoning_tokens.png"
        if png.is_file():
            md += [f"![reasoning tokens per path]({png.relative_to(root)})", ""]
    base = _result(summary, "base")
    if base:
        what = (f"The pretrained base model `{base['base_model']}`" if base.get("base_model") else
                "A Qwen2-architecture model built from a config")
        md += ["## Model", "", f"{what}: {base.get('params'):,} parameters, a {base.get('vocab')}-token vocabulary "
               "trained on the domain's text (14 reasoning tokens included).",
               "", markdown_table([base.get("model", {})]), ""]
    train = [{"stage": n, "global step": _result(summary, n).get("global_step"),
              "train loss": _result(summary, n).get("train_loss")}
             for n in ("cpt", "sft", "rl_step", "sft_optimal", "rl_outcome") if _result(summary, n)]
    if train:
        md += ["## Training", "", markdown_table(train), ""]
    rows = eval_rows(summary)
    if rows:
        md += ["## Evaluation on held-out targets", "", markdown_table(rows), ""]
    srows = sweep_rows(summary)
    if srows:
        md += ["## Step sweep (SFT + RL, format processor on)", "", markdown_table(srows), ""]
        xs = [r["max_steps"] if r["max_steps"] != "none" else None for r in srows]
        bounded = [(x, r) for x, r in zip(xs, srows, strict=True) if x is not None]
        if bounded:
            p = plot(root / "sweep_scaling.png", [Series([x for x, _ in bounded], [r["pass@1"] for _, r in bounded],
                                                          label="pass@1")],
                     xlabel="allowed reasoning steps (max_steps)", ylabel="pass@1", title="inference-time scaling")
            md += [f"![scaling]({p.relative_to(root)})", ""]
        for png in _result(summary, "sweep").get("plots", []):  # file names in the sweep's folder
            rel = Path("sweep") / Path(png).name
            md += [f"![{rel.stem.replace('_', ' ')}]({rel.as_posix()})", ""]
    mt = _result(summary, "multiturn")
    if mt:
        md += ["## Multi-turn", "", "Accuracy on a question asked alone, and asked as a follow-up after an earlier "
               "question whose reasoning the chat template collapsed to its step summaries.", "",
               markdown_table([mt]), ""]
    st = study_rows(summary)
    if st:
        md += ["## Study: search with backtracking vs. the internalised-CoT shortcut", "",
               "Held-out targets; (a) and (b) trained on the same number of tokens; bounded = step-bounds "
               "processor (min_steps 1, max_steps from the config).", "", markdown_table(st), ""]
    sk = _result(summary, "skills").get("rows", [])
    if sk:
        md += ["## Skills (teacher-forced)", "",
               "Share of tokens each model predicts right while reading the reference search of 100 held-out "
               "and 100 training problems (`steiner.countdown.skills`): the result of each move, the numbers "
               "left, the target copied into checks and into reflections, each check's yes/no. Free "
               "generation compounds a miss, so these bound the pass rate.", "", markdown_table(sk), ""]
    probe = _result(summary, "probe")
    if probe:
        fit = probe.get("fit") or {}
        md += ["## Serving and the latency probe", "",
               "One request through the `openai` client to the demo's own OpenAI-compatible server:", "",
               "```", json.dumps(probe.get("example", {}), indent=2)[:3000], "```", "",
               markdown_table([{k: fit.get(k) for k in ("slope", "intercept", "r2", "exponent", "verdict")}]), ""]
        if (root / "probe" / "probe.png").is_file():
            md += ["![latency probe](probe/probe.png)", ""]
    md += ["## Stages", "", markdown_table([{"stage": s["name"], "seconds": s["seconds"],
                                             "resumed": s["skipped"]} for s in summary["stages"]]), ""]
    md += ["## Configuration, seeds and versions", "", "```json",
           json.dumps({"config": summary["config"], "versions": summary["versions"], "hardware": hw,
                       "stage_configs": {s["name"]: s["config"] for s in summary["stages"]}}, indent=2), "```", ""]
    text = "\n".join(md)
    (root / "report.md").write_text(text)
    return write_html(root / "report.html", text, title="steiner demo report")


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    """A summary table in the terminal (on ``console``, default rich's own)."""
    import rich
    from rich.table import Table

    table = Table(title=f"steiner demo: {summary['wall_seconds'] / 60:.1f} min, report in {summary['config']['out']}/report.html")
    table.add_column("what")
    table.add_column("result")
    for r in eval_rows(summary):
        mk = next(k for k in r if k.startswith("maj@"))
        table.add_row(r["model"], f"pass@1 {r['pass@1']:.3f}  {mk} {r[mk]:.3f}  format {r['format valid']:.2f}")
    for r in sweep_rows(summary):
        table.add_row(f"max_steps {r['max_steps']}", f"pass@1 {r['pass@1']:.3f}")
    mt = _result(summary, "multiturn")
    if mt:
        table.add_row("multi-turn", f"alone {mt['alone']:.3f}  follow-up {mt['follow_up']:.3f}")
    for r in study_rows(summary):
        table.add_row(r["condition"], f"pass@1 {r['pass@1']:.3f}  bounded {r['pass@1 bounded'] or 0:.3f}")
    fit = _result(summary, "probe").get("fit") or {}
    if fit:
        table.add_row("latency probe", f"{fit.get('verdict')} (R^2 {fit.get('r2', 0):.3f})")
    (console or rich.get_console()).print(table)
