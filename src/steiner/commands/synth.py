"""`steiner synth`: synthesise reasoning data -- method one (random truncation) then method two (DAGs).

Writes to ``--out DIR``: problems.jsonl (the questions), test_problems.jsonl (held-out Countdown
problems, when generated), steps.jsonl (method one), dags.jsonl, paths.jsonl (method two, length
filtered), stats.json and reasoning_tokens.png.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from steiner.config import ConfigError, check_range, opt


@dataclass
class SynthConfig:
    """Options of `steiner synth`."""

    out: str = opt("synth_out", "output folder")
    questions: str | None = opt(None, "JSONL of questions {id, question, answer} (+ optional reference 'steps' "
                                      "and 'final_answer'); default: generate Countdown problems")
    problems: int = opt(300, "number of Countdown problems to generate (train split)")
    test_problems: int = opt(100, "number of held-out Countdown problems written to test_problems.jsonl")
    num_numbers: list[int] = opt([3, 4], "numbers per problem: min,max")
    number_range: list[int] = opt([1, 20], "range of the given numbers: lo,hi")
    target_range: list[int] = opt([10, 100], "range of the targets: lo,hi")
    test_fraction: float = opt(0.1, "share of target values held out for the test split")
    seed: int = opt(0, "seed of problems, cuts, attempts and sampling")
    teacher: Literal["builtin", "openai", "local"] = opt("builtin", "who writes the steps")
    forward_policy: Literal["heuristic", "random"] = opt("heuristic", "builtin teacher: how blind attempts choose moves")
    error_rate: float = opt(0.3, "builtin teacher: chance a heuristic move is random")
    base_urls: list[str] = opt([], "openai teacher: endpoint base URLs (load-balanced)")
    model: str = opt("", "openai teacher: model name")
    api_key: str | None = opt(None, "openai teacher: API key (None: $OPENAI_API_KEY)")
    model_dir: str | None = opt(None, "local teacher: save_pretrained folder of a chat model")
    concurrency: int = opt(16, "teacher requests in flight at once")
    timeout: float = opt(120.0, "openai teacher: seconds per request")
    max_retries: int = opt(4, "teacher retries per request")
    cache_dir: str | None = opt(None, "teacher reply cache folder (None: OUT/cache)")
    cuts: int = opt(2, "cut points per question (method one)")
    attempts: int = opt(1, "blind attempts per cut")
    forward_steps: int = opt(2, "steps a blind attempt may take")
    cluster: Literal["auto", "key", "embedding"] = opt("auto", "auto: exact key where the domain has one, else embeddings")
    similarity: float = opt(0.85, "cosine similarity that merges two steps (embedding clustering)")
    paths_per_dag: int = opt(4, "backtracking paths sampled per DAG")
    explore_prob: float = opt(0.5, "chance a walk enters a dead end at a node that has one")
    max_backtracks: int = opt(3, "most backtracks in one sampled path")
    include_optimal: bool = opt(True, "also write the shortest path per DAG (source 'optimal')")
    include_reference: bool = opt(True, "also write the reference path per question (source 'reference')")
    tokenizer: str = opt("qwen2.5", "tokenizer for the length filter: 'qwen2.5' (offline) or a save_pretrained folder")
    max_reasoning_tokens: int = opt(4096, "drop paths whose reasoning has this many tokens or more")
    max_total_tokens: int = opt(8192, "drop paths whose prompt + reasoning + answer has this many tokens or more")
    progress: bool = opt(True, "show progress bars")

    def __post_init__(self) -> None:
        for name in ("problems", "test_problems", "cuts", "max_backtracks"):
            check_range(name, getattr(self, name), lo=0)
        for name in ("concurrency", "attempts", "forward_steps", "max_reasoning_tokens", "max_total_tokens"):
            check_range(name, getattr(self, name), lo=1)
        check_range("paths_per_dag", self.paths_per_dag, lo=0)
        for name in ("error_rate", "explore_prob", "test_fraction", "similarity"):
            check_range(name, getattr(self, name), lo=0.0, hi=1.0)
        for name in ("num_numbers", "number_range", "target_range"):
            v = getattr(self, name)
            if len(v) != 2 or v[0] > v[1]:
                raise ConfigError(f"{name} must be two values lo,hi with lo <= hi, got {v!r}")
        if self.teacher == "openai" and (not self.base_urls or not self.model):
            raise ConfigError("teacher 'openai' needs base_urls and model")
        if self.teacher == "local" and not self.model_dir:
            raise ConfigError("teacher 'local' needs model_dir")


def load_questions(path: str | Path) -> tuple[list[dict], dict[str, tuple[list, str]]]:
    """Question records of a JSONL file and the reference paths some of them carry.

    Raises ValueError naming the file, the line and the missing column.
    """
    from steiner.format import ReasoningPath, step_from_dict, validate
    from steiner.jsonl import iter_records

    p = Path(path)
    records, refs, ids = [], {}, set()
    for where, rec in iter_records(p, "questions"):
        for col in ("id", "question", "answer"):
            if col not in rec or rec[col] in (None, ""):
                raise ValueError(f"{where} has no '{col}' column (need id, question, answer)")
        rec["id"] = str(rec["id"])
        if rec["id"] in ids:
            raise ValueError(f"{where}: duplicate id {rec['id']!r}")
        ids.add(rec["id"])
        if rec.get("steps"):
            try:
                steps = [step_from_dict(s) for s in rec["steps"]]
                final = str(rec.get("final_answer") or rec["answer"])
                validate(ReasoningPath(steps, final))
            except Exception as e:  # noqa: BLE001 - re-raised naming the file and line
                raise ValueError(f"{where}: column 'steps' is not a valid reasoning path: {e}") from e
            refs[rec["id"]] = (steps, final)
        records.append({k: v for k, v in rec.items() if k not in ("steps", "final_answer")})
    if not records:
        raise ValueError(f"{p}: no questions")
    return records, refs


def make_teacher(cfg: SynthConfig, out: Path) -> Any:
    """The teacher the config asks for; LLM teachers are imported only when chosen."""
    if cfg.teacher == "builtin":
        from steiner.countdown.teacher import BuiltinCountdownTeacher

        return BuiltinCountdownTeacher(seed=cfg.seed, forward_policy=cfg.forward_policy, error_rate=cfg.error_rate)
    cache = cfg.cache_dir or str(out / "cache")
    if cfg.teacher == "openai":
        from steiner.synth.llm_teacher import OpenAITeacher

        return OpenAITeacher(cfg.base_urls, cfg.model, api_key=cfg.api_key, concurrency=cfg.concurrency,
                             timeout=cfg.timeout, max_retries=cfg.max_retries, cache_dir=cache)
    from steiner.synth.llm_teacher import LocalTeacher

    return LocalTeacher(cfg.model_dir, max_retries=cfg.max_retries, cache_dir=cache)


def _write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def build_and_sample(cfg: SynthConfig, questions: list[dict], steps_records: list[dict]) -> tuple[list[dict], list[dict]]:
    """Method two over the records of ``questions``: (dags.jsonl records, paths before filtering)."""
    from rich.progress import Progress

    from steiner.synth.cluster import Embedder
    from steiner.synth.dag import build_dag
    from steiner.synth.domain import domain_for
    from steiner.synth.sample import optimal_path, reference_paths, sample_paths

    by_q: dict[str, list[dict]] = defaultdict(list)
    for r in steps_records:
        by_q[r["question_id"]].append(r)
    embedder = Embedder() if cfg.cluster != "key" else None
    dags, paths = [], []
    with Progress(disable=not cfg.progress) as bar:
        task = bar.add_task("DAGs and paths", total=len(questions))
        for q in questions:
            recs = by_q.get(q["id"])
            bar.advance(task)
            if not recs:
                continue
            dom = domain_for(q, cfg.seed)
            key_fn = dom.key_fn if cfg.cluster != "embedding" else None
            dag = build_dag(recs, key_fn=key_fn, embedder=embedder, threshold=cfg.similarity,
                            answer_ok=dom.answer_ok)
            dags.append(dag.to_record())
            paths += sample_paths(dag, cfg.paths_per_dag, cfg.seed, explore_prob=cfg.explore_prob,
                                  max_backtracks=cfg.max_backtracks, reflect_fn=dom.reflect_fn,
                                  answer_fn=dom.answer_fn)
            if cfg.include_optimal:
                opt_rec = optimal_path(dag, cfg.seed, dom.answer_fn)
                if opt_rec is not None:
                    paths.append(opt_rec)
            if cfg.include_reference:
                paths += reference_paths(dag)
    return dags, paths


def main(cfg: SynthConfig) -> dict:
    """Run synthesis end to end into ``cfg.out``; returns the statistics written to stats.json."""
    from rich.console import Console

    from steiner.countdown import generate_problems
    from steiner.synth.filters import filter_paths, load_filter_tokenizer, plot_histogram, synth_stats
    from steiner.synth.teacher import Question
    from steiner.synth.truncate import read_jsonl, synthesize_truncations

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    refs: dict = {}
    if cfg.questions:
        questions, refs = load_questions(cfg.questions)
    else:
        gen = dict(num_numbers=tuple(cfg.num_numbers), number_range=tuple(cfg.number_range),
                   target_range=tuple(cfg.target_range), test_fraction=cfg.test_fraction)
        questions = generate_problems(cfg.problems, cfg.seed, split="train", **gen)
        if cfg.test_problems:
            _write_jsonl(out / "test_problems.jsonl",
                         generate_problems(cfg.test_problems, cfg.seed, split="test", **gen))
    _write_jsonl(out / "problems.jsonl", questions)
    tokenizer = load_filter_tokenizer(cfg.tokenizer)  # fail early on a bad tokenizer option

    teacher = make_teacher(cfg, out)
    trunc = synthesize_truncations([Question.from_record(q) for q in questions], teacher, out / "steps.jsonl",
                                   cuts=cfg.cuts, attempts=cfg.attempts, forward_steps=cfg.forward_steps,
                                   seed=cfg.seed, concurrency=cfg.concurrency, references=refs,
                                   progress=cfg.progress, close_teacher=True)
    wanted = {q["id"] for q in questions}
    steps_records = [r for r in read_jsonl(out / "steps.jsonl") if r["question_id"] in wanted]
    dags, paths = build_and_sample(cfg, questions, steps_records)
    _write_jsonl(out / "dags.jsonl", dags)
    kept, tokens, dropped = filter_paths(paths, tokenizer, max_reasoning_tokens=cfg.max_reasoning_tokens,
                                         max_total_tokens=cfg.max_total_tokens)
    _write_jsonl(out / "paths.jsonl", kept)
    stats = synth_stats(dags, kept, tokens, dropped)
    stats["questions"] = len(questions)
    stats["steps_records"] = len(steps_records)
    stats["truncation"] = {"written": trunc.written, "skipped": trunc.skipped, "failed": trunc.failed,
                           "errors": trunc.errors[:20]}
    stats["teacher"] = teacher.name
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    plot_histogram(tokens, out / "reasoning_tokens.png")
    if cfg.progress:
        rt = stats["reasoning_tokens"]
        Console(stderr=True).print(
            f"[bold green]synth[/] {len(questions)} questions -> {len(steps_records)} step records, "
            f"{len(dags)} DAGs, {len(kept)} paths (dropped {dropped}); reasoning tokens mean "
            f"{rt.get('mean', 0)} p90 {rt.get('p90', 0)}; failed attempts {trunc.failed} -> {out}")
    return stats


def register(sub: argparse._SubParsersAction) -> None:
    from steiner.config import add_command

    add_command(sub, "synth", SynthConfig, main, help="synthesise reasoning data (truncation + DAGs)",
                description=__doc__)
