"""`steiner demo`: the whole recipe in miniature on Countdown, on a CPU, end to end.

problems -> built-in teacher -> random truncation -> DAGs -> backtracking paths -> a tokenizer trained
on the corpus, extended with the 14 tokens -> a tiny Qwen2 base pretrained on drill text (shipped; or
one built from a config) -> CPT -> SFT ->
RL with the step reward -> evaluation on held-out targets -> a step sweep -> serve and probe -> a
report (Markdown + HTML). Every stage is resumable: a stage is keyed by the full config it runs with
and by the stages it reads, so a rerun skips it unless one of those changed (see ``pipeline.py``).
The same code paths serve a 7B model on GPUs; only the configs change.

``stages.py`` builds each stage's config from ``DemoConfig`` and runs it; ``report.py`` writes the
report; ``display.py`` keeps the terminal to stage rules, progress bars and the summary.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from steiner.config import ConfigError, check_range, opt, to_dict


@dataclass
class DemoConfig:
    """Sizes of every stage; `quick` picks the quick preset, and any field set overrides it."""

    out: str = opt("steiner-demo", "output folder (a rerun resumes finished stages)")
    quick: bool = opt(False, "the 10-minute version: fewer problems, shorter training, no study")
    seed: int = opt(0, "seed of every stage")
    problems: int = opt(2000, "training problems to synthesise (the domain has about 2,100 with training targets)")
    number_orders: int = opt(3, "each training problem in up to this many number orders (a search follows the order)")
    test_problems: int = opt(200, "held-out problems (targets never seen in training; the domain has 250)")
    num_numbers: list[int] = opt([3, 3], "numbers per problem: min,max")
    target_range: list[int] = opt([10, 50], "range of targets: lo,hi")
    number_range: list[int] = opt([1, 12], "range of the given numbers: lo,hi")
    cuts: int = opt(2, "random-truncation cut points per question")
    paths_per_dag: int = opt(1, "backtracking paths sampled per DAG (walks in move order repeat: one is enough)")
    multiturn_fraction: float = opt(0.15, "share of SFT conversations with an earlier question as a first turn")
    multiturn_history: Literal["optimal", "search"] = opt(
        "optimal", "the earlier turn of those conversations: another question's optimal path, or its search (as "
                   "a client sends the model's own turn back; 0.5 + search: follow-up -3.5 vs -42 points, docs/demo.md)")
    past_answer_prob: float = opt(0.0, "chance a search goes on past a hit and comes back to it, so that forcing "
                                       "more steps (min_steps) stays in distribution (0.2: docs/demo.md)")
    budget_fraction: float = opt(0.5, "share of training searches written for a step budget K, stated in a system "
                                      "message ('Take at least K steps.'): hits before K are passed and come back, so "
                                      "forcing more steps (min_steps; the request need not state it) stays in "
                                      "distribution (0.5 with recheck passes: forcing 4 steps costs 1.5 points on the "
                                      "full run's model, docs/demo.md session 36)")
    budget_steps: list[int] = opt([2, 6], "range of K of those budgeted searches: lo,hi")
    budget_pass: Literal["search", "recheck"] = opt(
        "recheck", "how a budgeted search passes a hit before K: 'recheck' writes the hit's move again (a second "
                   "look, copied from the step before), 'search' tries one more move and comes back: forcing 4 "
                   "steps cost 3.2 points with recheck, 11.2 with search, at the same unforced accuracy "
                   "(SFT from one CPT checkpoint, docs/demo.md, sessions 34-35)")
    base_model: str = opt("builtin", "the pretrained base model to start from: 'builtin' is the shipped tiny base "
                                     "that knows the drill's arithmetic and states (steiner.demo.basemodel), else a "
                                     "save_pretrained folder; its tokenizer and shape replace vocab_size, "
                                     "number_tokens, hidden_size, num_layers and tie_embeddings. '' builds one from "
                                     "a config (then give --cpt-docs 20000 --drill-state-share 0, session 27's run)")
    vocab_size: int = opt(512, "size of the demo's own BPE vocabulary (before number and reasoning tokens)")
    number_tokens: int = opt(2000, "whole numbers below this are single tokens (arithmetic as facts, not digits)")
    hidden_size: int = opt(128, "model width")
    num_layers: int = opt(4, "model depth")
    tie_embeddings: bool = opt(True, "share the input and output embeddings: a copied number (the target into every check) is the same vector in and out; untied, held-out targets drift")
    compile: bool = opt(True, "train SFT under torch.compile (2 CPU cores: 2.8 vs 3.7 s/step after a 47 s compile; "
                              "CPT stays eager, compiled it is no faster: docs/demo.md sessions 30, 31; needs a "
                              "C++ compiler, else eager)")
    cpt_docs: int = opt(4000, "drill documents in the CPT mixture and SFT's replay (every fact, compared with "
                              "targets; 20000 when the model is built from a config and must learn the arithmetic)")
    drill_state_share: float = opt(0.5, "share of those drill documents that is state drill: three numbers and a "
                                        "target, a few first moves each after the numbers it starts from, every "
                                        "target value (a held-out one only with numbers that cannot make it)")
    cpt_epochs: float = opt(1.0, "passes over the CPT mixture")
    cpt_reasoning_ratio: float = opt(0.25, "share of CPT tokens from reasoning paths; the rest is drill text "
                                           "(the drill is where held-out targets are seen at all)")
    sft_epochs: float = opt(2.0, "passes over the SFT paths (the second pass lifted held-out pass@1 0.532 -> 0.785)")
    sft_text_ratio: float = opt(0.33, "share of SFT tokens replaying the drill text (keeps what CPT taught)")
    sft_max_length: int = opt(1536, "tokens per packed SFT row (a longer conversation is dropped: keep it above the longest search)")
    rl_steps: int = opt(10, "RL steps (each samples rl_questions x rl_group completions)")
    rl_group: int = opt(8, "completions per question in RL (G)")
    rl_questions: int = opt(8, "questions per RL update")
    rl_learning_rate: float = opt(2e-5, "RL learning rate")
    rl_max_steps: int = opt(12, "most reasoning steps a completion may take during RL (a search takes up to 11)")
    bounded_max_steps: int = opt(6, "max_steps of the step-bounds processor in the study's bounded runs")
    eval_n: int = opt(2, "samples per held-out question (pass@1 is their mean, maj@n votes); 8 for the full study")
    max_new_tokens: int = opt(1200, "most tokens per completion at evaluation and in RL (a full search is up to ~1,400; 20% of held-out searches pass 780)")
    sweep_max_steps: list[int] = opt([1, 2, 4, 6, 8], "max_steps values of the step sweep")
    sweep_min_steps: list[int] = opt([4], "min_steps values of the step sweep (forcing more steps)")
    probe_requests: int = opt(12, "requests the latency probe sends to the demo's own server")
    study: bool = opt(False, "also run the study: optimal-only SFT vs DAG SFT vs step RL vs outcome RL, each "
                             "with and without step bounds, the step sweeps and multi-turn vs alone (hours on 2 cores; "
                             "benchmarks/quality.py turns it on)")

    def __post_init__(self) -> None:
        for name in ("problems", "test_problems", "cuts", "paths_per_dag", "vocab_size", "hidden_size",
                     "num_layers", "eval_n", "max_new_tokens", "rl_group"):
            check_range(name, getattr(self, name), lo=1)
        check_range("rl_steps", self.rl_steps, lo=0)
        for name in ("multiturn_fraction", "past_answer_prob", "budget_fraction", "drill_state_share"):
            check_range(name, getattr(self, name), lo=0.0, hi=1.0)
        if len(self.budget_steps) != 2 or not 1 <= self.budget_steps[0] <= self.budget_steps[1]:
            raise ConfigError(f"budget_steps must be lo,hi with 1 <= lo <= hi, got {self.budget_steps!r}")


QUICK = {  # ~10 minutes on 2 CPU cores (docs/demo.md): every stage runs, on less data
    "problems": 600, "test_problems": 30, "cpt_epochs": 1.0, "sft_epochs": 1.0, "rl_steps": 2,
    "rl_group": 4, "rl_questions": 4, "sweep_max_steps": [1, 4], "sweep_min_steps": [], "probe_requests": 8,
    "max_new_tokens": 800, "budget_fraction": 0.0, "compile": False,
}


def resolve(cfg: DemoConfig, explicit: set[str] | None = None) -> DemoConfig:
    """Apply the quick preset to every field the user did not set explicitly."""
    if not cfg.quick:
        return cfg
    explicit = explicit or set()
    return replace(cfg, **{k: v for k, v in QUICK.items() if k not in explicit})


def run_stages(cfg: DemoConfig, pipe: Any) -> None:
    """Run (or resume) every stage in ``pipe`` (a `Pipeline` rooted at ``cfg.out``)."""
    from steiner.demo import stages as s

    d = pipe.dir
    data = d("synth")
    # the data stages key on the code that writes their data too, and hand on what they wrote (pipeline.py)
    pipe.run("synth", s.synth(cfg, data), s.run_synth, code=s.SYNTH_CODE)
    pipe.run("base", s.base(cfg, data), s.run_base, code=s.BASE_CODE)
    pipe.run("cpt", s.cpt(cfg, d("cpt"), model=d("base") / "model", paths=data / "paths_dag.jsonl",
                          text=d("base") / "arithmetic.txt"), s.run_cpt)
    drill = d("base") / "arithmetic.txt"
    pipe.run("sft", s.sft(cfg, d("sft"), model=d("cpt"), paths=data / "paths_dag.jsonl", text=drill), s.run_sft)
    pipe.run("eval_sft", s.evaluate(cfg, d("eval_sft"), model=d("sft"), data=data), s.run_eval)
    pipe.run("rl_step", s.rl(cfg, d("rl_step"), mode="step", model=d("sft"), data=data), s.run_rl)
    pipe.run("eval_rl_step", s.evaluate(cfg, d("eval_rl_step"), model=d("rl_step"), data=data), s.run_eval)
    if cfg.study:
        # (a) sees as many optimizer steps (packed tokens) as (b) did: the step count is part of its config
        pipe.run("sft_optimal", s.sft(cfg, d("sft_optimal"), model=d("cpt"), paths=data / "paths_optimal.jsonl",
                                      text=drill, max_steps=pipe.result("sft").get("global_step", -1)), s.run_sft)
        pipe.run("rl_outcome", s.rl(cfg, d("rl_outcome"), mode="outcome", model=d("sft"), data=data), s.run_rl)
        models = {"a_sft_optimal": "sft_optimal", "b_sft_dag": "sft", "c_rl_step": "rl_step",
                  "d_rl_outcome": "rl_outcome"}
    else:
        models = {"b_sft_dag": "sft", "c_rl_step": "rl_step"}

    def study(bounded: bool) -> None:
        for label, model in models.items():
            name = f"study_{label}_{'bounded' if bounded else 'free'}"
            pipe.run(name, s.evaluate(cfg, d(name), model=d(model), data=data, min_steps=1 if bounded else 0,
                                      max_steps=cfg.bounded_max_steps if bounded else None, format_strict=False),
                     s.run_eval)

    # most telling first: the study without bounds, the skills, then the sweep, the bounded runs and
    # multi-turn (all study: without them the full run fits its hour, docs/demo.md)
    if cfg.study:
        study(bounded=False)
    pipe.run("skills", s.skills(cfg, models={label: d(model) for label, model in models.items()}, data=data),
             s.run_skills)
    if cfg.study:
        pipe.run("sweep", s.sweep(cfg, d("sweep"), model=d("rl_step"), data=data), s.run_sweep)
        study(bounded=True)
        pipe.run("multiturn", s.multiturn(cfg, model=d("rl_step"), data=data), s.run_multiturn)
    pipe.run("probe", s.probe(cfg, d("probe"), model=d("rl_step"), data=data), s.run_probe)


def run(cfg: DemoConfig) -> dict[str, Any]:
    """Run (or resume) every stage; write summary.json and the report; return the summary."""
    from steiner.demo.display import Display
    from steiner.demo.pipeline import Pipeline, hardware, versions
    from steiner.demo.report import print_summary, write_report

    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    with Display(root / "demo.log") as display:
        pipe = Pipeline(root, on_start=display.stage, on_skip=display.skipped)
        run_stages(cfg, pipe)
        summary = {
            "config": to_dict(cfg), "hardware": hardware(), "versions": versions(),
            "stages": [{"name": r.name, "seconds": round(r.seconds, 1), "skipped": r.skipped, "inputs": r.inputs,
                        "config": r.config, "result": r.result} for r in pipe.records],
            "wall_seconds": round(time.perf_counter() - t_start, 1),
        }
        (root / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        write_report(root, summary)
        print_summary(summary, console=display.console)
    return summary


def main(cfg: DemoConfig) -> dict[str, Any]:
    """Entry point of `steiner demo`."""
    return run(cfg)
