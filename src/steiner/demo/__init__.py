"""`steiner demo`: the whole recipe in miniature on Countdown, on a CPU, end to end.

problems -> built-in teacher -> random truncation -> DAGs -> backtracking paths -> a tokenizer trained
on the corpus, extended with the 14 tokens -> a tiny Qwen2 model built from a config -> CPT -> SFT ->
RL with the step reward -> evaluation on held-out targets -> a step sweep -> serve and probe -> a
report (Markdown + HTML). Every stage is resumable: a rerun skips stages already complete for the same
config. The same code paths serve a 7B model on GPUs; only the configs change.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from steiner.config import check_range, opt, to_dict
from steiner.demo_stages import multiturn, serve_and_probe
from steiner.modeling import TinyModelConfig
from steiner.pipeline import Pipeline, hardware, versions


@dataclass
class DemoConfig:
    """Sizes of every stage; `preset` picks quick or full defaults, and any field set overrides it."""

    out: str = opt("steiner-demo", "output folder (a rerun resumes finished stages)")
    quick: bool = opt(False, "the 10-minute version: fewer problems, shorter training, no study")
    seed: int = opt(0, "seed of every stage")
    problems: int = opt(1500, "training problems to synthesise")
    test_problems: int = opt(80, "held-out problems (targets never seen in training)")
    num_numbers: list[int] = opt([3, 3], "numbers per problem: min,max")
    target_range: list[int] = opt([10, 50], "range of targets: lo,hi")
    number_range: list[int] = opt([1, 12], "range of the given numbers: lo,hi")
    cuts: int = opt(2, "random-truncation cut points per question")
    paths_per_dag: int = opt(4, "backtracking paths sampled per DAG")
    vocab_size: int = opt(512, "size of the demo's own BPE vocabulary (before the reasoning tokens)")
    hidden_size: int = opt(128, "model width")
    num_layers: int = opt(4, "model depth")
    cpt_docs: int = opt(6000, "plain arithmetic documents in the CPT mixture")
    cpt_epochs: float = opt(2.0, "passes over the CPT mixture")
    sft_epochs: float = opt(4.0, "passes over the SFT paths")
    sft_max_length: int = opt(512, "tokens per packed SFT row")
    rl_steps: int = opt(40, "RL updates")
    rl_group: int = opt(8, "completions per question in RL (G)")
    rl_questions: int = opt(8, "questions per RL update")
    rl_learning_rate: float = opt(2e-5, "RL learning rate")
    rl_max_steps: int = opt(8, "most reasoning steps a completion may take during RL")
    bounded_max_steps: int = opt(6, "max_steps of the step-bounds processor in the study's bounded runs")
    eval_n: int = opt(8, "samples per held-out question (pass@1 is their mean, maj@n votes)")
    max_new_tokens: int = opt(384, "most tokens per completion at evaluation")
    sweep_max_steps: list[int] = opt([1, 2, 3, 4, 6], "max_steps values of the step sweep")
    probe_requests: int = opt(12, "requests the latency probe sends to the demo's own server")
    study: bool = opt(True, "run the study: optimal-only SFT vs DAG SFT vs step RL vs outcome RL")

    def __post_init__(self) -> None:
        for name in ("problems", "test_problems", "cuts", "paths_per_dag", "vocab_size", "hidden_size",
                     "num_layers", "eval_n", "max_new_tokens", "rl_group"):
            check_range(name, getattr(self, name), lo=1)
        check_range("rl_steps", self.rl_steps, lo=0)


QUICK = {
    "problems": 600, "test_problems": 40, "cpt_docs": 3000, "cpt_epochs": 1.0, "sft_epochs": 3.0,
    "rl_steps": 6, "rl_group": 4, "rl_questions": 4, "sweep_max_steps": [1, 2, 4], "probe_requests": 8, "study": False,
}


def resolve(cfg: DemoConfig, explicit: set[str] | None = None) -> DemoConfig:
    """Apply the quick preset to every field the user did not set explicitly."""
    if not cfg.quick:
        return cfg
    explicit = explicit or set()
    return replace(cfg, **{k: v for k, v in QUICK.items() if k not in explicit})


def _tokenizer_texts(data: Path) -> list[str]:
    from steiner.format import path_from_dict, render

    texts = []
    for name in ("paths.jsonl", "problems.jsonl"):
        for line in (data / name).read_text().splitlines():
            rec = json.loads(line)
            texts.append(rec["question"])
            if "steps" in rec:
                texts.append(render(path_from_dict(rec)))
    return texts


def run(cfg: DemoConfig) -> dict[str, Any]:
    """Run (or resume) every stage; return the summary that the report shows."""
    from rich.console import Console

    console = Console(stderr=True)
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    pipe = Pipeline(root, on_start=lambda name: console.rule(f"[bold]{name}"))
    data = root / "synth"

    def synth(d: Path) -> dict[str, Any]:
        from steiner.commands.synth import SynthConfig
        from steiner.commands.synth import main as synth_main

        synth_main(SynthConfig(
            out=str(d), problems=cfg.problems, test_problems=cfg.test_problems, num_numbers=cfg.num_numbers,
            number_range=cfg.number_range, target_range=cfg.target_range, seed=cfg.seed, cuts=cfg.cuts,
            paths_per_dag=cfg.paths_per_dag, tokenizer="qwen2.5",
        ))
        return json.loads((d / "stats.json").read_text())

    pipe.run("synth", {k: getattr(cfg, k) for k in ("problems", "test_problems", "num_numbers", "number_range",
                                                    "target_range", "seed", "cuts", "paths_per_dag")}, synth)
    split_paths(data, cfg.seed)

    def base_model(d: Path) -> dict[str, Any]:
        from steiner.countdown.text import arithmetic_documents
        from steiner.modeling import build_model
        from steiner.tokenizer import train_tokenizer

        docs = arithmetic_documents(cfg.cpt_docs, cfg.seed)
        (d / "arithmetic.txt").write_text("\n\n".join(docs) + "\n")
        tok = train_tokenizer(_tokenizer_texts(data) + docs, vocab_size=cfg.vocab_size)
        mcfg = TinyModelConfig(hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, num_heads=4,
                               intermediate_size=cfg.hidden_size * 4, max_position_embeddings=2048, seed=cfg.seed)
        model = build_model(tok, mcfg)
        model.save_pretrained(d / "model")
        tok.save_pretrained(d / "model")
        return {"vocab": len(tok), "params": sum(p.numel() for p in model.parameters()), "model": to_dict(mcfg)}

    pipe.run("base", {k: getattr(cfg, k) for k in ("seed", "vocab_size", "hidden_size", "num_layers", "cpt_docs")}
             | {"data": pipe.result("synth").get("paths")}, base_model)

    def cpt(d: Path) -> dict[str, Any]:
        from steiner.train.cpt import CPTConfig
        from steiner.train.cpt import main as cpt_main

        c = CPTConfig(model=str(root / "base" / "model"), output_dir=str(d), seed=cfg.seed,
                      paths_files=[str(data / "paths_dag.jsonl")], text_files=[str(root / "base" / "arithmetic.txt")],
                      reasoning_ratio=0.5, num_epochs=cfg.cpt_epochs, max_length=512, per_device_batch_size=8,
                      learning_rate=1e-3, warmup_ratio=0.05, save_steps=10_000, logging_steps=20)
        out = cpt_main(c)
        return _summary(out)

    pipe.run("cpt", {"epochs": cfg.cpt_epochs, "seed": cfg.seed}, cpt)

    def sft(d: Path, paths_file: str, start: Path, epochs: float, max_steps: int = -1) -> dict[str, Any]:
        from steiner.train.sft import SteinerSFTConfig
        from steiner.train.sft import main as sft_main

        c = SteinerSFTConfig(model=str(start), output_dir=str(d), seed=cfg.seed, paths_files=[paths_file],
                             num_epochs=epochs, max_steps=max_steps, max_length=cfg.sft_max_length, per_device_batch_size=8, learning_rate=1e-3,
                             warmup_ratio=0.05, save_steps=10_000, logging_steps=20)
        return _summary(sft_main(c))

    cpt_model = root / "cpt"
    pipe.run("sft", {"epochs": cfg.sft_epochs, "seed": cfg.seed, "data": "paths_dag"},
             lambda d: sft(d, str(data / "paths_dag.jsonl"), cpt_model, cfg.sft_epochs))

    def evaluate(d: Path, model_dir: Path, *, min_steps: int = 0, max_steps: int | None = None,
                 format_strict: bool = True) -> dict[str, Any]:
        from steiner.eval.runner import EvalConfig
        from steiner.eval.runner import main as eval_main

        rep = eval_main(EvalConfig(task="countdown", data=str(data / "test_problems.jsonl"), model=str(model_dir),
                                   n=cfg.eval_n, temperature=0.7, max_new_tokens=cfg.max_new_tokens,
                                   format_strict=format_strict, min_steps=min_steps, max_steps=max_steps,
                                   seed=cfg.seed, out=str(d), batch_size=32))
        return {k: v for k, v in rep["metrics"].items() if not isinstance(v, list | dict)}

    sft_b = root / "sft"
    pipe.run("eval_sft", _eval_key(cfg), lambda d: evaluate(d, sft_b))

    def rl(d: Path, mode: str, start: Path) -> dict[str, Any]:
        from steiner.train.rl import RLConfig
        from steiner.train.rl import main as rl_main

        c = RLConfig(model=str(start), output_dir=str(d), seed=cfg.seed, mode=mode,
                     questions=str(data / "problems.jsonl"), dags=str(data / "dags.jsonl"),
                     num_generations=cfg.rl_group, questions_per_step=cfg.rl_questions, max_steps=cfg.rl_steps,
                     max_new_tokens=cfg.max_new_tokens, temperature=1.0, learning_rate=cfg.rl_learning_rate,
                     per_device_batch_size=16, save_steps=10_000, logging_steps=1, kl_coef=0.02,
                     max_reasoning_steps=cfg.rl_max_steps)
        return _summary(rl_main(c))

    rl_c = root / "rl_step"
    pipe.run("rl_step", {"steps": cfg.rl_steps, "G": cfg.rl_group, "seed": cfg.seed, "q": cfg.rl_questions},
             lambda d: rl(d, "step", sft_b))
    pipe.run("eval_rl_step", _eval_key(cfg), lambda d: evaluate(d, rl_c))

    def sweep(d: Path) -> dict[str, Any]:
        from steiner.eval.sweep import SweepConfig
        from steiner.eval.sweep import main as sweep_main

        rep = sweep_main(SweepConfig(task="countdown", data=str(data / "test_problems.jsonl"), model=str(rl_c),
                                     n=cfg.eval_n, temperature=0.7, max_new_tokens=cfg.max_new_tokens,
                                     format_strict=True, seed=cfg.seed, out=str(d), batch_size=32,
                                     grid=",".join(f"0:{m}" for m in cfg.sweep_max_steps) + ",0:none"))
        return {"cells": rep["cells"], "plots": rep.get("plots", [])}

    pipe.run("sweep", _eval_key(cfg) | {"grid": cfg.sweep_max_steps}, sweep)
    pipe.run("multiturn", _eval_key(cfg), lambda d: multiturn(d, rl_c, data, cfg))
    pipe.run("probe", {"requests": cfg.probe_requests, "seed": cfg.seed}, lambda d: serve_and_probe(d, rl_c, cfg))

    if cfg.study:
        steps_b = pipe.result("sft").get("global_step")
        pipe.run("sft_optimal", {"steps": steps_b, "seed": cfg.seed, "data": "paths_optimal"},
                 lambda d: sft(d, str(data / "paths_optimal.jsonl"), cpt_model, cfg.sft_epochs, max_steps=steps_b))
        pipe.run("rl_outcome", {"steps": cfg.rl_steps, "G": cfg.rl_group, "seed": cfg.seed, "q": cfg.rl_questions},
                 lambda d: rl(d, "outcome", sft_b))
        models = {"a_sft_optimal": root / "sft_optimal", "b_sft_dag": sft_b, "c_rl_step": rl_c,
                  "d_rl_outcome": root / "rl_outcome"}
        for label, model_dir in models.items():
            for bounded in (False, True):
                name = f"study_{label}_{'bounded' if bounded else 'free'}"
                pipe.run(name, _eval_key(cfg) | {"bounded": bounded},
                         lambda d, m=model_dir, b=bounded: evaluate(
                             d, m, min_steps=1 if b else 0, max_steps=cfg.bounded_max_steps if b else None,
                             format_strict=False))

    summary = {
        "config": to_dict(cfg), "hardware": hardware(), "versions": versions(),
        "stages": [{"name": r.name, "seconds": round(r.seconds, 1), "skipped": r.skipped, "config": r.config,
                    "result": r.result} for r in pipe.records],
        "wall_seconds": round(time.perf_counter() - t_start, 1),
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    from steiner.demo_report import print_summary, write_report

    write_report(root, summary)
    print_summary(summary)
    return summary


def _eval_key(cfg: DemoConfig) -> dict[str, Any]:
    return {"n": cfg.eval_n, "seed": cfg.seed, "max_new_tokens": cfg.max_new_tokens}


def _summary(out: Path) -> dict[str, Any]:
    from steiner.train.common import SUMMARY_FILE

    f = Path(out) / SUMMARY_FILE
    res = json.loads(f.read_text()) if f.is_file() else {}
    res.pop("config", None)
    res.pop("metrics", None)
    return {"model": str(out), **res}


def split_paths(data: Path, seed: int, multiturn_fraction: float = 0.15) -> None:
    """Write paths_dag.jsonl (DAG walks with backtracks) and paths_optimal.jsonl (shortest paths only).

    A ``multiturn_fraction`` of the records in each file get an earlier turn (another question's optimal
    path) as ``history``, so the model sees conversations whose earlier reasoning is collapsed to
    summaries.
    """
    import random

    by_source: dict[str, list[dict[str, Any]]] = {}
    for line in (data / "paths.jsonl").read_text().splitlines():
        rec = json.loads(line)
        by_source.setdefault(rec["source"], []).append(rec)
    optimal = by_source.get("optimal", [])
    rng = random.Random(seed)
    for name, recs in (("paths_dag.jsonl", by_source.get("dag", []) + by_source.get("reference", [])),
                       ("paths_optimal.jsonl", optimal)):
        lines = []
        for rec in recs:
            if optimal and rng.random() < multiturn_fraction:
                prev = rng.choice(optimal)
                if prev["question_id"] != rec["question_id"]:
                    rec = {**rec, "history": [{k: prev[k] for k in ("question", "steps", "final_answer")}]}
            lines.append(json.dumps(rec))
        (data / name).write_text("\n".join(lines) + "\n")


def main(cfg: DemoConfig) -> dict[str, Any]:
    """Entry point of `steiner demo`."""
    return run(cfg)
