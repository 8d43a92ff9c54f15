"""Training throughput: steiner CPT and SFT (packed) against plain TRL SFTTrainer without packing.

All three runs see the same synthetic reasoning paths (varied lengths, like real backtracking data)
on the same tiny Qwen2 model, one epoch each. Throughput counts only real (non-pad) tokens: the
tokens of the data, divided by the Trainer's own train_runtime (loading and tokenization excluded).
Each run is a fresh subprocess so its peak RSS is its own.

    .venv/bin/python benchmarks/train.py [--paths 200] [--batch 8] [--max-length 1024] [--pack-length 1024]
        [--hidden 64] [--layers 2] [--compile]

``--compile`` adds steiner SFT and CPT with ``torch_compile`` on (the compile time is inside train s);
``--hidden 128 --layers 4`` is the demo's model.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

WORDS = ("add subtract multiply divide the numbers remaining target reach close far step result try "
         "again check left right sum product difference twenty four eight six three seven").split()


def make_paths(n: int, seed: int) -> list[dict]:
    """Reasoning paths with 2-10 steps of 5-60-word thoughts and occasional backtracks."""
    from steiner.format import Step, step_to_dict

    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.randint(2, 10)
        steps = []
        for j in range(k):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60)))
            last = j == k - 1
            back = not last and j > 0 and rng.random() < 0.25
            steps.append(Step(f"step {j + 1}", words, " ".join(words.split()[:6]), "looks fine" if not back else
                              "dead end, go back", "end" if last else ("backtrack" if back else "proceed"),
                              returns_to=rng.randint(0, j) if back else None))
        q = f"Use {rng.randint(1, 9)}, {rng.randint(1, 9)}, {rng.randint(1, 13)} to reach {rng.randint(10, 30)}."
        out.append({"id": f"p{i}", "question_id": f"q{i}", "question": q, "answer": "24",
                    "steps": [step_to_dict(s) for s in steps], "final_answer": "(3+5)*3", "source": "dag",
                    "num_backtracks": sum(s.decision == "backtrack" for s in steps)})
    return out


def setup(work: Path, n_paths: int, hidden: int = 64, layers: int = 2) -> tuple[Path, Path]:
    from steiner.format import ReasoningPath, render, step_from_dict
    from steiner.modeling import TinyModelConfig, build_model
    from steiner.tokenizer import train_tokenizer

    paths = make_paths(n_paths, seed=0)
    pfile = work / "paths.jsonl"
    pfile.write_text("".join(json.dumps(p) + "\n" for p in paths))
    texts = [p["question"] + render(ReasoningPath([step_from_dict(s) for s in p["steps"]], p["final_answer"]))
             for p in paths[:200]]
    tok = train_tokenizer(texts, vocab_size=1024)
    mdir = work / "model"
    build_model(tok, TinyModelConfig(hidden_size=hidden, num_layers=layers, num_heads=4,
                                                   intermediate_size=4 * hidden)).save_pretrained(mdir)
    tok.save_pretrained(mdir)
    return pfile, mdir


def run_one(kind: str, pfile: str, mdir: str, out: str, batch: int, max_length: int, pack_length: int) -> dict:
    """One training run in this process; returns tokens, runtime and peak RSS."""
    from steiner.train.common import read_paths

    cpu0 = _cpu()
    kind, compiled = kind.removesuffix("+compile"), kind.endswith("+compile")
    common = dict(model=mdir, output_dir=out, num_epochs=1, per_device_batch_size=batch, save_steps=10**6,
                  logging_steps=10**6, learning_rate=1e-3, resume=False, use_cpu=True, torch_compile=compiled)
    if kind == "cpt":
        from steiner.train.cpt import CPTConfig
        from steiner.train.cpt import main as cpt_main

        res = cpt_main(CPTConfig(**common, paths_files=[pfile], reasoning_ratio=1.0, max_length=pack_length))
        s = json.loads((res / "steiner_train.json").read_text())
        tokens = s["data"]["blocks"] * pack_length
    elif kind == "sft":
        from steiner.train.sft import SteinerSFTConfig
        from steiner.train.sft import main as sft_main

        res = sft_main(SteinerSFTConfig(**common, paths_files=[pfile], packing=True, max_length=pack_length))
        s = json.loads((res / "steiner_train.json").read_text())
        tokens = s["data"]["tokens"]
    else:  # plain TRL: conversational dataset, assistant_only_loss, no packing (pads each batch)
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        from steiner.tokenizer import load_model, load_tokenizer
        from steiner.train.common import path_messages

        tok, model = load_tokenizer(mdir), load_model(mdir)
        ds = Dataset.from_list([{"messages": path_messages(r)} for r, _ in read_paths(pfile)])
        args = SFTConfig(output_dir=out, num_train_epochs=1, per_device_train_batch_size=batch, save_strategy="no",
                         logging_steps=10**6, learning_rate=1e-3, use_cpu=True, bf16=False, report_to=[],
                         max_length=max_length, packing=False, assistant_only_loss=True,
                         gradient_checkpointing=False)
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
        tokens = sum(len(x) for x in trainer.train_dataset["input_ids"])
        s = {"metrics": trainer.train().metrics}
    cpu = _cpu() - cpu0
    runtime = float(s["metrics"]["train_runtime"])
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind + ("+compile" if compiled else ""), "tokens": tokens, "runtime_s": runtime, "tokens_per_s": tokens / runtime,
            "cpu_s": cpu, "tokens_per_cpu_s": tokens / cpu, "peak_rss_mb": rss_mb}


def _cpu() -> float:
    """CPU seconds of this process (user + system): steadier than wall time on a shared machine."""
    t = os.times()
    return t.user + t.system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=200, help="number of reasoning paths")
    ap.add_argument("--batch", type=int, default=8, help="per-device batch size (rows)")
    ap.add_argument("--max-length", type=int, default=1024, help="truncation length of the unpacked TRL baseline")
    ap.add_argument("--pack-length", type=int, default=1024, help="CPT block size and SFT packing length")
    ap.add_argument("--hidden", type=int, default=64, help="model width (the demo's is 128)")
    ap.add_argument("--layers", type=int, default=2, help="model depth (the demo's is 4)")
    ap.add_argument("--compile", action="store_true", help="also run steiner SFT and CPT with torch_compile")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        w = Path(a.work)
        r = run_one(a.one, str(w / "paths.jsonl"), str(w / "model"), str(w / f"out_{a.one}"), a.batch,
                    a.max_length, a.pack_length)
        print("RESULT " + json.dumps(r))
        return

    from rich.console import Console
    from rich.table import Table

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        setup(work, a.paths, a.hidden, a.layers)
        rows = {}
        kinds = ("trl", "sft", "cpt") + (("sft+compile", "cpt+compile") if a.compile else ())
        for kind in kinds:
            cmd = [sys.executable, __file__, "--one", kind, "--work", str(work), "--batch", str(a.batch),
                   "--max-length", str(a.max_length), "--pack-length", str(a.pack_length)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                sys.exit(f"{kind} run failed:\n{proc.stderr[-3000:]}")
            rows[kind] = json.loads(line[0][len("RESULT "):])
    base, base_cpu = rows["trl"]["tokens_per_s"], rows["trl"]["tokens_per_cpu_s"]
    names = {"trl": "TRL SFTTrainer, no packing", "sft": "steiner SFT, packed", "cpt": "steiner CPT, blocks",
             "sft+compile": "steiner SFT, packed, torch.compile", "cpt+compile": "steiner CPT, blocks, torch.compile"}
    table = Table(title=f"training throughput, {a.paths} paths, 1 epoch, batch {a.batch}, "
                        f"pack length {a.pack_length}, hidden {a.hidden} x {a.layers} layers, {os.cpu_count()} CPU cores")
    cols = ("run", "real tokens", "train s", "tokens/s", "vs TRL", "CPU s", "tokens/CPU-s", "vs TRL", "peak RSS MB")
    for col in cols:
        table.add_column(col, justify="left" if col == "run" else "right")
    for kind in kinds:
        r = rows[kind]
        table.add_row(names[kind], str(r["tokens"]), f"{r['runtime_s']:.1f}", f"{r['tokens_per_s']:.0f}",
                      f"{r['tokens_per_s'] / base:.2f}x", f"{r['cpu_s']:.0f}", f"{r['tokens_per_cpu_s']:.0f}",
                      f"{r['tokens_per_cpu_s'] / base_cpu:.2f}x", f"{r['peak_rss_mb']:.0f}")
    Console(width=160).print(table)
    print("tokens = real (non-pad) tokens of the data seen in one epoch; train s = the Trainer's train_runtime; "
          "CPU s = user+system CPU time of the whole run (loading and tokenizing included)")


if __name__ == "__main__":
    main()
