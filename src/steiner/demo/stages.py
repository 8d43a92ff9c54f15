"""The demo's stages: for each, a builder of the full config it runs with, and a runner.

A builder (``synth``, ``cpt``, ``evaluate`` ...) turns the DemoConfig into the stage's own config: a
library config dataclass (``CPTConfig``, ``EvalConfig`` ...) or a small dataclass below bundling what a
stage of several calls needs. The pipeline keys the stage on all of it. A runner (``run_synth``,
``run_cpt`` ...) gets that config and the stage folder and uses nothing else, so the key cannot miss
an option the stage depends on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steiner.eval.runner import EvalConfig
from steiner.eval.sweep import SweepConfig
from steiner.jsonl import read_jsonl, write_jsonl
from steiner.modeling import TinyModelConfig
from steiner.probe import ProbeConfig
from steiner.serve.config import ServeConfig
from steiner.synth.pipeline import SynthConfig
from steiner.train.cpt import CPTConfig
from steiner.train.rl import RLConfig
from steiner.train.sft import SteinerSFTConfig

if TYPE_CHECKING:
    from steiner.demo import DemoConfig


def _summary(out: Path) -> dict[str, Any]:
    """A training stage's result: the model folder and its run summary (without the config and log)."""
    from steiner.train.common import SUMMARY_FILE

    f = Path(out) / SUMMARY_FILE
    res = json.loads(f.read_text()) if f.is_file() else {}
    res.pop("config", None)
    res.pop("metrics", None)
    return {"model": str(out), **res}


# ---------------------------------------------------------------- synthesis

# the modules whose source writes each data stage's output (`Pipeline.run(code=...)`)
SYNTH_CODE = ("steiner.synth", "steiner.countdown", "steiner.domain", "steiner.format", "steiner.grading",
              "steiner.jsonl", "steiner.demo.stages")
BASE_CODE = ("steiner.countdown", "steiner.tokenizer", "steiner.modeling", "steiner.templates", "steiner.format",
             "steiner.demo.stages")


@dataclass
class SynthStage:
    """`steiner synth` with the built-in teacher, then the split into DAG and optimal-only path files."""

    synth: SynthConfig
    multiturn_fraction: float = 0.15  # share of SFT records that get an earlier turn as history
    split_seed: int = 0
    multiturn_history: str = "optimal"  # what the earlier turn of a search's conversation is: "optimal" or "search"
    budget_fraction: float = 0.0  # share of searches rewritten for a step budget (`budget_searches`)
    budget_steps: list[int] = field(default_factory=lambda: [2, 6])  # range of those budgets: lo,hi
    budget_pass: str = "search"  # how they pass a hit before the budget (`search_path`'s budget_pass)


def synth(cfg: DemoConfig, out: Path) -> SynthStage:
    return SynthStage(
        synth=SynthConfig(out=str(out), problems=cfg.problems, test_problems=cfg.test_problems,
                          number_orders=cfg.number_orders,
                          num_numbers=cfg.num_numbers, number_range=cfg.number_range,
                          target_range=cfg.target_range, seed=cfg.seed, cuts=cfg.cuts,
                          paths_per_dag=cfg.paths_per_dag, tokenizer="qwen2.5",
                          # walks enter every dead end in the domain's move order: the depth-first
                          # search, which a small model can learn (a random order it cannot)
                          explore_prob=1.0, max_backtracks=40, past_answer_prob=cfg.past_answer_prob),
        split_seed=cfg.seed, multiturn_fraction=cfg.multiturn_fraction, multiturn_history=cfg.multiturn_history,
        budget_fraction=cfg.budget_fraction, budget_steps=list(cfg.budget_steps), budget_pass=cfg.budget_pass)


def run_synth(c: SynthStage, out: Path) -> dict[str, Any]:
    from steiner.synth.pipeline import main as synth_main

    synth_main(c.synth)
    split_paths(out, c.split_seed, c.multiturn_fraction, prefer_reference=c.synth.past_answer_prob > 0,
                history=c.multiturn_history, budget_fraction=c.budget_fraction, budget_steps=c.budget_steps,
                budget_pass=c.budget_pass)
    return json.loads((out / "stats.json").read_text())


def budget_searches(searches: list[dict[str, Any]], problems: Path, fraction: float, steps: Sequence[int],
                    seed: int, budget_pass: str = "search") -> list[dict[str, Any]]:
    """``searches`` with a ``fraction`` of them written again for a step budget K drawn from ``steps``
    (lo,hi): the search of `steiner.countdown.steps.search_path` with ``min_steps=K``, which passes each hit
    before step K, tries one more move and comes back (``budget_pass="recheck"``: writes the hit's move
    again), and a system message that states the budget
    (`steiner.format.min_steps_prompt`). A model trained on them has a way to go on when a request forces
    more steps (the step-bounds processor bans the end; the request need not state the budget), while a
    request without a budget sees only the plain searches' behaviour."""
    import random

    from steiner.countdown.steps import search_path
    from steiner.format import min_steps_prompt, step_to_dict

    if fraction <= 0:
        return searches
    lo, hi = steps
    rng = random.Random(f"{seed}:budget")
    by_id = {p["id"]: p for p in read_jsonl(problems, "problems")}
    out = []
    for rec in searches:
        if rng.random() >= fraction:
            out.append(rec)
            continue
        k = rng.randint(lo, hi)
        p = by_id.get(rec["question_id"])
        if p is None:
            raise ValueError(f"{problems}: no problem {rec['question_id']!r} for the search {rec['id']!r}")
        found = search_path(p["numbers"], p["target"], min_steps=k, budget_pass=budget_pass)
        if found is None:
            raise ValueError(f"{problems}: problem {p['id']!r} has no solution")
        body, answer = found
        out.append({**rec, "id": f"{rec['id']}-min{k}", "steps": [step_to_dict(st) for st in body],
                    "final_answer": answer, "source": "budget", "system": min_steps_prompt(k)})
    return out


def split_paths(data: Path, seed: int, multiturn_fraction: float = 0.15, prefer_reference: bool = False,
                history: str = "optimal", budget_fraction: float = 0.0, budget_steps: Sequence[int] = (2, 6),
                budget_pass: str = "search") -> None:
    """Write paths_dag.jsonl (DAG walks with backtracks) and paths_optimal.jsonl (shortest paths only).

    A ``multiturn_fraction`` of the records in each file get an earlier turn as ``history`` (another
    question's optimal path; with ``history="search"``, in the search file another question's search, as
    a client sends the model's own earlier turn back), so the model sees conversations whose earlier
    reasoning is collapsed to summaries. A ``budget_fraction`` of the searches are written for a stated
    step budget (`budget_searches`).
    """
    if history not in ("optimal", "search"):
        raise ValueError(f"multiturn history must be 'optimal' or 'search', got {history!r}")
    import random

    by_source: dict[str, list[dict[str, Any]]] = {}
    for rec in read_jsonl(data / "paths.jsonl", "paths"):
        by_source.setdefault(rec["source"], []).append(rec)
    optimal = by_source.get("optimal", [])
    rng = random.Random(seed)
    # a walk in move order repeats the teacher's reference search; a search that goes on past a hit
    # (``prefer_reference``) only the teacher writes (the DAG holds what it wrote): it stands in for the walk
    refs = {rec["question_id"]: rec for rec in by_source.get("reference", [])} if prefer_reference else {}
    searches, seen = [], set()
    for rec in by_source.get("dag", []) + by_source.get("reference", []):
        rec = refs.get(rec["question_id"], rec)
        sig = (rec["question_id"], tuple((st["name"], st["decision"], st.get("returns_to")) for st in rec["steps"]))
        if sig not in seen:
            seen.add(sig)
            searches.append(rec)
    searches = budget_searches(searches, data / "problems.jsonl", budget_fraction, budget_steps, seed, budget_pass)
    earlier = searches if history == "search" else optimal
    for name, recs, pool in (("paths_dag.jsonl", searches, earlier), ("paths_optimal.jsonl", optimal, optimal)):
        lines = []
        for rec in recs:
            if optimal and rng.random() < multiturn_fraction:
                prev = rng.choice(pool)
                if prev["question_id"] != rec["question_id"]:
                    rec = {**rec, "history": [{k: prev[k] for k in ("question", "steps", "final_answer")}]}
            lines.append(rec)
        write_jsonl(data / name, lines)


# ---------------------------------------------------------------- tokenizer + base model


@dataclass
class BaseStage:
    """The drill text, and the model: a pretrained base copied in (``base_model``), or a BPE tokenizer trained
    on the corpus (plus the reasoning tokens) and a model built from a config."""

    corpus: list[str]  # JSONL files whose questions and rendered paths train the tokenizer
    cpt_docs: int  # drill documents written for CPT and SFT's replay (they train the tokenizer too)
    drill_state_share: float  # the share of them that is state drill (steiner.countdown.text.drill_documents)
    seed: int
    vocab_size: int
    number_range: list[int]  # the drill covers every fact of this range and every target of target_range
    target_range: list[int]
    number_tokens: int  # whole numbers below this are single tokens
    model: TinyModelConfig = field(default_factory=TinyModelConfig)
    base_model: str = ""  # a pretrained base to start from instead (`DemoConfig.base_model`); "" builds one
    base_model_digest: str = ""  # a digest of that folder's files, so a changed base reruns what follows


def base(cfg: DemoConfig, data: Path) -> BaseStage:
    digest = ""
    if cfg.base_model:
        from steiner.demo.basemodel import resolve_base_model
        from steiner.demo.pipeline import output_digest

        digest = output_digest(resolve_base_model(cfg.base_model))  # fails early, naming a missing folder
    return BaseStage(corpus=[str(data / "paths.jsonl"), str(data / "problems.jsonl")], cpt_docs=cfg.cpt_docs,
                     drill_state_share=cfg.drill_state_share, seed=cfg.seed, vocab_size=cfg.vocab_size,
                     number_range=list(cfg.number_range), target_range=list(cfg.target_range),
                     number_tokens=cfg.number_tokens,
                     model=TinyModelConfig(hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, num_heads=4,
                                           intermediate_size=cfg.hidden_size * 4, max_position_embeddings=2048,
                                           tie_word_embeddings=cfg.tie_embeddings, seed=cfg.seed),
                     base_model=cfg.base_model, base_model_digest=digest)


def _tokenizer_texts(files: list[str]) -> list[str]:
    from steiner.format import path_from_dict, render
    from steiner.jsonl import iter_records

    texts = []
    for name in files:
        for _, rec in iter_records(name):
            texts.append(rec["question"])
            if "steps" in rec:
                texts.append(render(path_from_dict(rec)))
    return texts


def run_base(c: BaseStage, out: Path) -> dict[str, Any]:
    from steiner.config import to_dict
    from steiner.countdown.problems import held_out_targets
    from steiner.countdown.text import drill_documents
    from steiner.modeling import build_model
    from steiner.tokenizer import train_tokenizer

    docs = drill_documents(c.cpt_docs, c.seed, state_share=c.drill_state_share, number_range=c.number_range,
                           target_range=c.target_range, held_out=held_out_targets(tuple(c.target_range)))
    (out / "arithmetic.txt").write_text("\n\n".join(docs) + "\n")
    if c.base_model:
        from steiner.demo.basemodel import resolve_base_model

        return _pretrained_base(resolve_base_model(c.base_model), out / "model")
    # a number is one token, the same one after a space, a bracket or "=" (copies of unseen targets)
    tok = train_tokenizer(_tokenizer_texts(c.corpus) + docs, vocab_size=c.vocab_size,
                          number_tokens=c.number_tokens, isolate_numbers=True)
    model = build_model(tok, c.model)
    model.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    return {"vocab": len(tok), "params": sum(p.numel() for p in model.parameters()), "model": to_dict(c.model)}


def _pretrained_base(folder: Path, out: Path) -> dict[str, Any]:
    """Copy a pretrained base into the stage as fp32, its tokenizer extended with the reasoning tokens."""
    import torch

    from steiner.tokenizer import ReasoningTokenIds, chat_template, extend, load_model, load_tokenizer

    tok = load_tokenizer(folder)
    model = load_model(folder, dtype=torch.float32)  # trained in fp32 whatever dtype it was shipped in
    try:
        ReasoningTokenIds.from_tokenizer(tok)
    except ValueError:
        extend(tok, model)  # a plain base: the recipe's tokenizer extension
    tok.chat_template = chat_template()  # the project's template, never a stale copy saved with the base
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return {"vocab": len(tok), "params": sum(p.numel() for p in model.parameters()), "base_model": str(folder),
            "model": {"hidden_size": model.config.hidden_size, "num_layers": model.config.num_hidden_layers,
                      "tie_word_embeddings": bool(model.config.tie_word_embeddings)}}


# ---------------------------------------------------------------- training


def cpt(cfg: DemoConfig, out: Path, *, model: Path, paths: Path, text: Path) -> CPTConfig:
    return CPTConfig(model=str(model), output_dir=str(out), seed=cfg.seed, paths_files=[str(paths)],
                     text_files=[str(text)], reasoning_ratio=cfg.cpt_reasoning_ratio, num_epochs=cfg.cpt_epochs, max_length=1024,
                     per_device_batch_size=4, learning_rate=2e-3, warmup_ratio=0.05, save_steps=10_000,
                     # eager: compiled CPT learns the same (loss 1.8781 vs 1.8784 after 300 steps) but is no faster
                     # on CPU (189 vs 164 s for 300 steps, the compile included; docs/demo.md session 31)
                     logging_steps=20, torch_compile=False)


def run_cpt(c: CPTConfig, out: Path) -> dict[str, Any]:
    from steiner.train.cpt import main as cpt_main

    return _summary(cpt_main(c))


def sft(cfg: DemoConfig, out: Path, *, model: Path, paths: Path, text: Path, max_steps: int = -1) -> SteinerSFTConfig:
    return SteinerSFTConfig(model=str(model), output_dir=str(out), seed=cfg.seed, paths_files=[str(paths)],
                            text_files=[str(text)] if cfg.sft_text_ratio > 0 else [], text_ratio=cfg.sft_text_ratio,
                            num_epochs=cfg.sft_epochs, max_steps=max_steps, max_length=cfg.sft_max_length,
                            per_device_batch_size=8, learning_rate=1e-3, warmup_ratio=0.05, save_steps=10_000,
                            logging_steps=20, torch_compile=cfg.compile)


def run_sft(c: SteinerSFTConfig, out: Path) -> dict[str, Any]:
    from steiner.train.sft import main as sft_main

    return _summary(sft_main(c))


def rl(cfg: DemoConfig, out: Path, *, mode: str, model: Path, data: Path) -> RLConfig:
    # minibatches of up to 16 completions that split each step's rl_questions x rl_group evenly
    batch = math.gcd(16, cfg.rl_questions * cfg.rl_group)
    return RLConfig(model=str(model), output_dir=str(out), seed=cfg.seed, mode=mode,
                    questions=str(data / "problems.jsonl"), dags=str(data / "dags.jsonl"),
                    num_generations=cfg.rl_group, questions_per_step=cfg.rl_questions, max_steps=cfg.rl_steps,
                    max_new_tokens=cfg.max_new_tokens, temperature=1.0, learning_rate=cfg.rl_learning_rate,
                    per_device_batch_size=batch, save_steps=10_000, logging_steps=1, kl_coef=0.02,
                    max_reasoning_steps=cfg.rl_max_steps,
                    # a search is many steps longer than the DAG's shortest path by design: no length penalty
                    length_penalty=0.0)


def run_rl(c: RLConfig, out: Path) -> dict[str, Any]:
    from steiner.train.rl import main as rl_main

    return _summary(rl_main(c))


# ---------------------------------------------------------------- evaluation


def evaluate(cfg: DemoConfig, out: Path, *, model: Path, data: Path, min_steps: int = 0,
             max_steps: int | None = None, format_strict: bool = True) -> EvalConfig:
    return EvalConfig(task="countdown", data=str(data / "test_problems.jsonl"), model=str(model), n=cfg.eval_n,
                      temperature=0.7, max_new_tokens=cfg.max_new_tokens, format_strict=format_strict,
                      min_steps=min_steps, max_steps=max_steps, seed=cfg.seed, out=str(out), batch_size=32)


def run_eval(c: EvalConfig, out: Path) -> dict[str, Any]:
    from steiner.eval.runner import main as eval_main

    rep = eval_main(c)
    return {k: v for k, v in rep["metrics"].items() if not isinstance(v, list | dict)}


def sweep(cfg: DemoConfig, out: Path, *, model: Path, data: Path) -> SweepConfig:
    return SweepConfig(task="countdown", data=str(data / "test_problems.jsonl"), model=str(model), n=cfg.eval_n,
                       temperature=0.7, max_new_tokens=cfg.max_new_tokens, format_strict=True, seed=cfg.seed,
                       out=str(out), batch_size=32,
                       grid=",".join([f"0:{m}" for m in cfg.sweep_max_steps] + ["0:none"]
                                     + [f"{m}:none" for m in cfg.sweep_min_steps]))


def run_sweep(c: SweepConfig, out: Path) -> dict[str, Any]:
    from steiner.eval.sweep import main as sweep_main

    rep = sweep_main(c)
    return {"cells": rep["cells"], "plots": rep.get("plots", [])}  # plot file names in the stage folder


@dataclass
class MultiturnStage:
    """Accuracy on held-out questions asked alone vs. as a follow-up to another question."""

    model: str
    data: str  # test_problems.jsonl
    n: int
    max_new_tokens: int
    seed: int
    temperature: float = 0.7
    batch_size: int = 32


def multiturn(cfg: DemoConfig, *, model: Path, data: Path) -> MultiturnStage:
    return MultiturnStage(model=str(model), data=str(data / "test_problems.jsonl"), n=cfg.eval_n,
                          max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)


def run_multiturn(c: MultiturnStage, out: Path) -> dict[str, Any]:
    """The follow-up conversation holds an earlier question and the model's own answer to it, whose
    reasoning the chat template collapses to step summaries, as a client sending the turn back would."""
    from steiner.eval.tasks import load_items, resolve_task
    from steiner.format import step_to_dict
    from steiner.grading import grade
    from steiner.infer import generate
    from steiner.tokenizer import load_model, load_tokenizer

    spec = resolve_task("countdown", c.data)
    items = load_items(spec)
    tok, model = load_tokenizer(c.model), load_model(c.model)
    model.eval()
    kw = {"max_new_tokens": c.max_new_tokens, "format_strict": True, "batch_size": c.batch_size}
    alone = [[{"role": "user", "content": it.prompt}] for it in items]
    firsts = [items[(i + 1) % len(items)] for i in range(len(items))]
    first_turns = generate(model, tok, [[{"role": "user", "content": f.prompt}] for f in firsts],
                           n=1, temperature=0.0, seed=c.seed, **kw)
    follow = []
    for it, f, (g,) in zip(items, firsts, first_turns, strict=True):
        steps = [step_to_dict(s) for s in g.path.steps if s.decision is not None]
        if steps:
            steps[-1]["decision"] = "end"
        follow.append([{"role": "user", "content": f.prompt},
                       {"role": "assistant", "content": g.answer, "steps": steps},
                       {"role": "user", "content": it.prompt}])
    res: dict[str, Any] = {}
    rows = []
    for name, convs in (("alone", alone), ("follow_up", follow)):
        gens = generate(model, tok, convs, n=c.n, temperature=c.temperature, seed=c.seed, **kw)
        correct = [[grade(spec, it, g.text).correct for g in gs] for it, gs in zip(items, gens, strict=True)]
        res[name] = sum(map(sum, correct)) / (len(items) * c.n)
        rows += [{"setting": name, "question_id": it.id, "correct": k} for it, k in zip(items, correct, strict=True)]
    res["difference"] = res["follow_up"] - res["alone"]
    res["questions"] = len(items)
    res["samples"] = c.n
    write_jsonl(out / "multiturn.jsonl", rows)
    return res


@dataclass
class SkillsStage:
    """Teacher-forced skill accuracy (`steiner.countdown.skills`) of each model on the reference searches
    of held-out problems and of as many training problems (a skill right only on training targets is
    memorised)."""

    models: dict[str, str]  # label -> model folder
    test_data: str  # test_problems.jsonl
    train_data: str  # problems.jsonl
    problems: int = 100


def skills(cfg: DemoConfig, *, models: dict[str, Path], data: Path) -> SkillsStage:
    return SkillsStage(models={k: str(v) for k, v in models.items()}, test_data=str(data / "test_problems.jsonl"),
                       train_data=str(data / "problems.jsonl"))


def run_skills(c: SkillsStage, out: Path) -> dict[str, Any]:
    from steiner.countdown.skills import measure_skills
    from steiner.tokenizer import load_model, load_tokenizer

    rows = []
    test = read_jsonl(c.test_data, "test problems")[: c.problems]
    train = read_jsonl(c.train_data, "problems")[: c.problems]
    for label, folder in c.models.items():
        tok, model = load_tokenizer(folder), load_model(folder)
        for split, problems in (("held-out", test), ("training", train)):
            res = measure_skills(model, tok, problems)
            rows.append({"model": label, "targets": split, **{k: v for k, v in res.items() if k != "tokens"}})
    write_jsonl(out / "skills.jsonl", rows)
    return {"rows": rows}


# ---------------------------------------------------------------- serving


@dataclass
class ProbeStage:
    """Serve the model on loopback, ask one question with the `openai` client, then probe the latency."""

    serve: ServeConfig
    probe: ProbeConfig  # base_url is filled in once the server is up
    question_file: str  # the example question is its first record
    max_tokens: int
    max_steps: int


def probe(cfg: DemoConfig, out: Path, *, model: Path, data: Path) -> ProbeStage:
    return ProbeStage(
        serve=ServeConfig(model=str(model), served_model_name="steiner-demo", max_batch_size=32),
        probe=ProbeConfig(model=["steiner-demo"], requests=cfg.probe_requests,
                          max_tokens=[32, 64, 128, 192, 256, 384], extra_body={"ignore_eos": True},
                          temperature=1.0, warmup=1, repeats=1, bootstrap=300, seed=cfg.seed, out=str(out)),
        question_file=str(data / "test_problems.jsonl"), max_tokens=cfg.max_new_tokens,
        max_steps=cfg.bounded_max_steps)


def run_probe(c: ProbeStage, out: Path) -> dict[str, Any]:
    from openai import OpenAI

    from steiner.jsonl import iter_records
    from steiner.probe import main as probe_main
    from steiner.serve.app import create_app
    from steiner.serve.background import BackgroundServer

    name = c.serve.served_model_name
    question = next(iter_records(c.question_file))[1]["question"]
    with BackgroundServer(create_app(c.serve)) as srv:
        client = OpenAI(base_url=srv.base_url, api_key="none")
        resp = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": question}], max_tokens=c.max_tokens,
            temperature=0.0, extra_body={"max_steps": c.max_steps, "format_strict": True})
        msg = resp.choices[0].message
        example = {"question": question, "reasoning_content": getattr(msg, "reasoning_content", None),
                   "content": msg.content, "usage": resp.usage.model_dump() if resp.usage else None}
        report = probe_main(replace(c.probe, base_url=[srv.base_url]))
    (out / "example.json").write_text(json.dumps(example, indent=2))
    fit = report[name]["fit"] or {}
    return {"example": example, "fit": fit, "plot": str(out / "probe.png")}
