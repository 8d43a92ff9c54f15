"""The study behind steiner's claims, on held-out Countdown targets, at equal training tokens:

(a) SFT on optimal paths only (the "internalised CoT" shortcut), (b) SFT on DAG paths with backtracking,
(c) (b) + RL with the step-level reward, (d) (b) + outcome-only RL; each with and without the
step-bounds processor; pass@1 and maj@n; the inference-time scaling curve of (c); multi-turn.

It runs the full demo with the study on (`steiner demo --study`) into --out, resuming whatever is already there,
and prints the figures and the differences the targets are about:
    .venv/bin/python benchmarks/quality.py [--out steiner-demo] [--quick] [--eval-n 8]

The study's evaluations draw --eval-n samples per held-out question (8, as the study asks). A first pass
with --eval-n 2 takes hours less; a later run at 8 into the same --out keeps those samples and draws the
rest (an evaluation's samples are cached by question and sample index).
"""

from __future__ import annotations

import argparse


def main() -> None:
    from steiner.demo import DemoConfig, resolve, run
    from steiner.demo.report import study_rows, sweep_rows

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="steiner-demo")
    ap.add_argument("--quick", action="store_true", help="the quick preset (the study stays on)")
    ap.add_argument("--eval-n", type=int, default=8, help="samples per held-out question in every evaluation")
    args = ap.parse_args()
    cfg = resolve(DemoConfig(out=args.out, quick=args.quick, study=True, eval_n=args.eval_n),
                  explicit={"study", "eval_n"})
    summary = run(cfg)

    print("\ncondition                                   pass@1  bounded  maj    maj bounded")
    for r in study_rows(summary):
        mk = next(k for k in r if k.startswith("maj@") and "bounded" not in k)
        print(f"{r['condition']:<43} {r['pass@1']:.3f}   {r['pass@1 bounded']:.3f}    {r[mk]:.3f}  {r[mk + ' bounded']:.3f}")

    from pathlib import Path

    from steiner.eval.compare import compare

    stage = {"(a)": "a_sft_optimal", "(b)": "b_sft_dag", "(c)": "c_rl_step", "(d)": "d_rl_outcome"}

    def diff(x: str, y: str) -> str:
        a, b = (Path(args.out) / f"study_{stage[label]}_free" for label in (x, y))
        if not (a / "samples.jsonl").is_file() or not (b / "samples.jsonl").is_file():
            return "n/a"
        rep = compare([str(a)], [str(b)])
        lo, hi = rep["ci"]
        return (f"{100 * rep['difference']:+.1f} points (95% CI {100 * lo:+.1f} to {100 * hi:+.1f}, "
                f"{rep['shared_questions']} questions)")

    print(f"\n(b) - (a): {diff('(b)', '(a)')}  (target: >= +15)")
    print(f"(c) - (b): {diff('(c)', '(b)')}  (target: > 0)")
    print(f"(c) - (d): {diff('(c)', '(d)')}  (target: > 0)")
    print("steps verified (arithmetic and state right):",
          ", ".join(f"{r['condition'][:3]} {r['steps verified']:.3f}" for r in study_rows(summary)
                    if r.get("steps verified") is not None))
    cells = sweep_rows(summary)
    print("scaling (max_steps -> pass@1):",
          ", ".join(f"{r['max_steps']}: {r['pass@1']:.3f}" for r in cells if not r["min_steps"]))
    print("forcing steps (min_steps -> pass@1):",
          ", ".join(f"{r['min_steps']}: {r['pass@1']:.3f}" for r in cells if r["min_steps"]))
    mt = next((s["result"] for s in summary["stages"] if s["name"] == "multiturn"), None)
    if mt:
        print(f"multi-turn: alone {mt['alone']:.3f}, follow-up {mt['follow_up']:.3f}, "
              f"difference {100 * mt['difference']:+.1f} points (target: within 3)")


if __name__ == "__main__":
    main()
