"""RL cost per step, side by side: the TRL-based trainer (`steiner.train.rl`) against the hand-written loop it
replaced, on the same tiny model, questions and G, in step and outcome mode.

The old loop is not kept in the source tree: its code is taken from git (``--old-commit``, the last commit
that had it) with ``git archive`` into a temporary folder and run from there, so both sides run on this
machine in one invocation. Data come from the real pipeline (`steiner synth`, built-in Countdown teacher);
the tokenizer is trained on the synthesised paths and the model is an untrained tiny Qwen2 (hidden 64, 2
layers). Each run is a fresh subprocess, so its peak RSS is its own; the first RL step (warm-up) is
reported apart.

    .venv/bin/python benchmarks/rl.py [--problems 8] [--steps 4] [--g 8] [--questions-per-step 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OLD_COMMIT = "0999aa8"  # the hand-written loop (src/steiner/train/rl.py before the GRPOTrainer port)
# the child marks the process CPU time whenever a metrics line appears, so CPU per RL step is measured
# without touching either implementation (CPU time is far less sensitive to other load than wall time)
CHILD = """
import json, pathlib, resource, sys, threading, time
cfg = json.loads(sys.argv[1]); path = pathlib.Path(cfg["output_dir"]) / "metrics.jsonl"; marks = []
def poll():
    n = 0
    while True:
        k = len(path.read_text().splitlines()) if path.exists() else 0
        if k > n:
            marks.append((k, time.process_time())); n = k
        time.sleep(0.05)
threading.Thread(target=poll, daemon=True).start()
from steiner.train.rl import RLConfig, main
main(RLConfig(**cfg)); time.sleep(0.2)
r = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"rss_kb": r.ru_maxrss, "cpu_s": r.ru_utime + r.ru_stime, "marks": marks}))
"""


def setup(work: Path, problems: int) -> Path:
    from steiner.commands.synth import SynthConfig
    from steiner.commands.synth import main as synth
    from steiner.format import ReasoningPath, render, step_from_dict
    from steiner.modeling import TinyModelConfig, build_model
    from steiner.tokenizer import train_tokenizer

    synth(SynthConfig(out=str(work / "synth"), problems=problems, test_problems=0, seed=0, progress=False))
    paths = [json.loads(x) for x in (work / "synth" / "paths.jsonl").read_text().splitlines()]
    texts = [p["question"] + render(ReasoningPath([step_from_dict(s) for s in p["steps"]], p["final_answer"]))
             for p in paths]
    tok = train_tokenizer(texts, vocab_size=512)
    model_dir = work / "model"
    build_model(tok, TinyModelConfig(hidden_size=64, num_layers=2)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return model_dir


def old_source(work: Path, commit: str) -> Path:
    """``src/`` of ``commit`` extracted into ``work/old`` (the old loop with the modules it imported)."""
    dest = work / "old"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest / "src"


def run(work: Path, model_dir: Path, impl: str, mode: str, args: argparse.Namespace, src: Path | None) -> dict:
    out = work / f"rl_{impl}_{mode}"
    cfg = dict(model=str(model_dir), output_dir=str(out), mode=mode, dags=str(work / "synth" / "dags.jsonl"),
               questions=str(work / "synth" / "problems.jsonl"), num_generations=args.g,
               questions_per_step=args.questions_per_step, max_new_tokens=args.max_new_tokens,
               max_reasoning_tokens=args.max_new_tokens - 16, max_steps=args.steps,
               per_device_batch_size=args.g * args.questions_per_step, learning_rate=1e-3, save_steps=10_000,
               use_cpu=True, resume=False)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    if src is not None:  # the old loop: its own source tree first on the path
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True, env=env,
                          cwd=str(work))
    if proc.returncode:
        sys.exit(f"RL run ({impl}, {mode}) failed:\n{proc.stderr[-3000:]}")
    usage = json.loads(proc.stdout.strip().splitlines()[-1])
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rest = lines[1:] or lines

    def mean(k: str) -> float:
        return sum(m.get(k, float("nan")) for m in rest) / len(rest)

    marks = usage["marks"]  # (lines written, process CPU seconds)
    steady = (marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0]) if len(marks) > 1 else float("nan")
    return {"impl": impl, "mode": mode, "first_step_s": lines[0]["seconds"], "s_per_step": mean("seconds"),
            "generate_s": mean("generate_seconds"), "reward_s": mean("reward_seconds"),
            "tokens": mean("completion_tokens" if "completion_tokens" in rest[0] else "completions/mean_length"),
            "peak_rss_mb": usage["rss_kb"] / 1024, "cpu_s_per_step": steady, "cpu_total_s": usage["cpu_s"],
            "load": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--g", type=int, default=8)
    ap.add_argument("--questions-per-step", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--old-commit", default=OLD_COMMIT, help="git commit whose src/ holds the old loop")
    ap.add_argument("--modes", default="step,outcome")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (0: torch's default)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = setup(work, args.problems)
        old = old_source(work, args.old_commit)
        for mode in args.modes.split(","):
            rows.append(run(work, model_dir, "old loop", mode, args, old))
            rows.append(run(work, model_dir, "GRPOTrainer", mode, args, None))
    print(f"RL, tiny Qwen2 (64 wide, 2 layers), G={args.g}, {args.questions_per_step} questions/step, "
          f"<= {args.max_new_tokens} new tokens, {args.steps} steps (first one reported apart), CPU, "
          f"{args.threads or 'default'} thread(s); old loop = {args.old_commit}")
    print(f"{'impl':12} {'mode':8} {'s/step':>7} {'first':>7} {'generate':>9} {'rewards':>8} {'cpu s/step':>10} "
          f"{'cpu total':>9} {'tokens':>7} {'peak RSS':>9} {'load':>5}")
    for r in rows:
        print(f"{r['impl']:12} {r['mode']:8} {r['s_per_step']:7.2f} {r['first_step_s']:7.2f} {r['generate_s']:9.2f} "
              f"{r['reward_s']:8.3f} {r['cpu_s_per_step']:10.2f} {r['cpu_total_s']:9.1f} {r['tokens']:7.1f} "
              f"{r['peak_rss_mb']:7.0f}MB "
              f"{r['load']:5.1f}")
    print("s/step, generate, rewards: wall seconds per RL step after the first; cpu s/step: process CPU seconds per "
          "RL step after the first (all threads); cpu total: the whole run, loading included; tokens: mean "
          "completion length; load: 1-min load average after the run (wall times compare only at similar load)")
    for i in range(0, len(rows), 2):
        old, new = rows[i], rows[i + 1]
        per_tok = (new["cpu_s_per_step"] / new["tokens"]) / (old["cpu_s_per_step"] / old["tokens"])
        print(f"{old['mode']}: new/old time per step {new['s_per_step'] / old['s_per_step']:.2f}, "
              f"CPU per step {new['cpu_s_per_step'] / old['cpu_s_per_step']:.2f} (per completion token "
              f"{per_tok:.2f}), "
              f"peak RSS {new['peak_rss_mb'] / old['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
