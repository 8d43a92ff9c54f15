"""Teacher-forced skill accuracy of Countdown models: arithmetic, the numbers left, the target copied
into checks and into reflections, each check's verdict (`steiner.countdown.skills`).

Held-out and training problems side by side, so a skill that is memorised (right on training targets
only) shows as a gap. Seconds per model on a CPU.

    .venv/bin/python benchmarks/countdown_skills.py --data steiner-demo/synth \\
        --model steiner-demo/sft steiner-demo/rl_step --problems 100
"""

from __future__ import annotations

import argparse
from pathlib import Path

from steiner.countdown.skills import SKILLS, measure_skills
from steiner.jsonl import read_jsonl
from steiner.report import markdown_table
from steiner.tokenizer import load_model, load_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", nargs="+", required=True, help="save_pretrained folders of steiner models")
    ap.add_argument("--data", required=True, help="a synth folder with test_problems.jsonl and problems.jsonl")
    ap.add_argument("--problems", type=int, default=100, help="problems of each split")
    args = ap.parse_args()
    data = Path(args.data)
    splits = {"held-out": read_jsonl(data / "test_problems.jsonl", "test problems")[: args.problems],
              "training": read_jsonl(data / "problems.jsonl", "problems")[: args.problems]}
    rows = []
    for folder in args.model:
        tok, model = load_tokenizer(folder), load_model(folder)
        for split, problems in splits.items():
            res = measure_skills(model, tok, problems)
            rows.append({"model": folder, "targets": split, **{k: res[k] for k in SKILLS}})
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
