"""The synthesis pipeline as three resumable stages, each reading the files of the one before.

1. `truncate` -- questions -> ``problems.jsonl`` (+ ``test_problems.jsonl`` for generated Countdown
   problems) and method one, ``steps.jsonl`` (references and truncation attempts; resumable record by
   record). Teacher replies that cannot be parsed go to ``rejects_teacher.jsonl`` with the reason and
   the raw reply.
2. `build_dags` -- ``problems.jsonl`` + ``steps.jsonl`` -> answer checks (`steiner.synth.verify`;
   rejected records to ``rejects_verify.jsonl``), clustering and one DAG per question, ``dags.jsonl``.
3. `sample` -- ``problems.jsonl`` + ``steps.jsonl`` + ``dags.jsonl`` -> backtracking paths, length
   filtered, ``paths.jsonl``; ``reasoning_tokens.png``.

`main` runs all three (``steiner synth`` / ``steiner synth run``). Every stage merges its counts into
``stats.json``. A DAG record carries the ids of the step records it was built from and the node of
each of their steps (``record_ids``, ``record_nodes``), so `sample` rebuilds the DAG without
clustering again, and ``unverified_backtracks``, the records kept although no check could tell
whether their abandoned attempt was wrong.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from steiner.config import ConfigError, check_range, opt
from steiner.jsonl import write_jsonl

OUTPUT_MODES = ("auto", "json_schema", "json_object", "text")


@dataclass
class SynthConfig:
    """Options of `steiner synth` (every stage takes the same options and uses those it needs)."""

    out: str = opt("synth_out", "output folder")
    questions: str | None = opt(None, "JSONL of questions {id, question, answer} (+ optional reference 'steps' "
                                      "and 'final_answer', 'choices', 'answer_type'); default: generate Countdown "
                                      "problems")
    problems: int = opt(300, "number of Countdown problems to generate (train split)")
    test_problems: int = opt(100, "number of held-out Countdown problems written to test_problems.jsonl")
    number_orders: int = opt(1, "each training problem written with its numbers in up to this many orders "
                                "(a search follows the given order: more varied traces)")
    num_numbers: list[int] = opt([3, 4], "numbers per problem: min,max")
    number_range: list[int] = opt([1, 20], "range of the given numbers: lo,hi")
    target_range: list[int] = opt([10, 100], "range of the targets: lo,hi")
    test_fraction: float = opt(0.1, "share of target values held out for the test split")
    seed: int = opt(0, "seed of problems, cuts, attempts and sampling")
    teacher: Literal["builtin", "openai", "local"] = opt("builtin", "who writes the steps")
    forward_policy: Literal["heuristic", "random"] = opt("heuristic", "builtin teacher: how blind attempts choose moves")
    error_rate: float = opt(0.3, "builtin teacher: chance a heuristic move is random")
    past_answer_prob: float = opt(0.0, "builtin teacher: chance its search goes on past a hit and comes back to it "
                                       "(so forcing more steps, min_steps, stays in distribution)")
    base_urls: list[str] = opt([], "openai teacher: endpoint base URLs (load-balanced)")
    model: str = opt("", "openai teacher: model name")
    api_key: str | None = opt(None, "openai teacher: API key (None: $OPENAI_API_KEY)")
    model_dir: str | None = opt(None, "local teacher: save_pretrained folder of a chat model")
    max_tokens: int = opt(4096, "LLM teachers: most tokens per reply (a reply cut there is retried once "
                                "with twice the budget)")
    temperature: float = opt(0.7, "LLM teachers: sampling temperature")
    output: Literal["auto", "json_schema", "json_object", "text"] = opt(
        "auto", "openai teacher: structured output; auto: JSON Schema, falling back to json_object, then to "
                "plain text (always parsed tolerantly)")
    concurrency: int = opt(16, "teacher requests in flight at once")
    timeout: float = opt(120.0, "openai teacher: seconds per request")
    max_retries: int = opt(4, "teacher retries per request")
    cache_dir: str | None = opt(None, "teacher reply cache folder (None: OUT/cache)")
    cuts: int = opt(2, "cut points per question (method one)")
    attempts: int = opt(1, "blind attempts per cut")
    forward_steps: int = opt(2, "steps a blind attempt may take")
    verify: bool = opt(True, "check final answers against the gold answer and drop records that fail "
                             "(see docs/synth.md)")
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
        for name in ("number_orders", "concurrency", "attempts", "forward_steps", "max_reasoning_tokens", "max_total_tokens",
                     "max_tokens"):
            check_range(name, getattr(self, name), lo=1)
        check_range("paths_per_dag", self.paths_per_dag, lo=0)
        check_range("temperature", self.temperature, lo=0.0)
        for name in ("error_rate", "explore_prob", "test_fraction", "similarity", "past_answer_prob"):
            check_range(name, getattr(self, name), lo=0.0, hi=1.0)
        for name in ("num_numbers", "number_range", "target_range"):
            v = getattr(self, name)
            if len(v) != 2 or v[0] > v[1]:
                raise ConfigError(f"{name} must be two values lo,hi with lo <= hi, got {v!r}")
        if self.teacher == "openai" and (not self.base_urls or not self.model):
            raise ConfigError("teacher 'openai' needs base_urls and model")
        if self.teacher == "local" and not self.model_dir:
            raise ConfigError("teacher 'local' needs model_dir")


# ---------------------------------------------------------------- files


def load_questions(path: str | Path) -> tuple[list[dict], dict[str, tuple[list, str]]]:
    """Question records of a JSONL file (`steiner.domain.read_questions`) and the reference paths some
    of them carry in ``steps`` (+ ``final_answer``).

    Raises ValueError naming the file, the line (or question) and the bad field.
    """
    from steiner.domain import read_questions
    from steiner.format import ReasoningPath, step_from_dict, validate

    records, refs = [], {}
    for rec in read_questions(path):
        if rec.get("steps"):
            try:
                steps = [step_from_dict(s) for s in rec["steps"]]
                final = str(rec.get("final_answer") or rec["answer"])
                validate(ReasoningPath(steps, final))
            except Exception as e:  # noqa: BLE001 - re-raised naming the file and question
                raise ValueError(f"{path}: question {rec['id']!r}: field 'steps' is not a valid reasoning path: "
                                 f"{e}") from e
            refs[rec["id"]] = (steps, final)
        records.append({k: v for k, v in rec.items() if k not in ("steps", "final_answer")})
    return records, refs


def _read(path: Path, what: str, stage: str) -> list[dict]:
    from steiner.jsonl import iter_records

    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist; run `steiner synth {stage}` first")
    return [rec for _, rec in iter_records(path, what)]


def update_stats(out: Path, section: dict[str, Any]) -> dict[str, Any]:
    """Merge ``section`` into ``out/stats.json`` (written atomically) and return the whole."""
    path = out / "stats.json"
    stats: dict[str, Any] = {}
    if path.is_file():
        try:
            stats = json.loads(path.read_text())
        except json.JSONDecodeError:
            stats = {}
    stats.update(section)
    tmp = out / ".stats.json.tmp"
    tmp.write_text(json.dumps(stats, indent=2, ensure_ascii=False))
    os.replace(tmp, path)
    return stats


# ---------------------------------------------------------------- stage 1: truncation


def make_teacher(cfg: SynthConfig, out: Path) -> Any:
    """The teacher the config asks for; LLM teachers are imported only when chosen."""
    if cfg.teacher == "builtin":
        from steiner.domain import get_domain

        # the embedded domain's own offline teacher, through the domain seam (`Domain.teacher`)
        return get_domain("countdown").teacher(seed=cfg.seed, forward_policy=cfg.forward_policy,
                                               error_rate=cfg.error_rate, past_answer_prob=cfg.past_answer_prob)
    cache = cfg.cache_dir or str(out / "cache")
    rejects = out / "rejects_teacher.jsonl"
    if cfg.teacher == "openai":
        from steiner.synth.llm_teacher import OpenAITeacher

        return OpenAITeacher(cfg.base_urls, cfg.model, api_key=cfg.api_key, concurrency=cfg.concurrency,
                             timeout=cfg.timeout, max_retries=cfg.max_retries, cache_dir=cache,
                             temperature=cfg.temperature, max_tokens=cfg.max_tokens, output=cfg.output,
                             rejects_path=rejects)
    from steiner.synth.llm_teacher import LocalTeacher

    return LocalTeacher(cfg.model_dir, max_retries=cfg.max_retries, cache_dir=cache, temperature=cfg.temperature,
                        max_new_tokens=cfg.max_tokens, rejects_path=rejects)


def prepare_questions(cfg: SynthConfig, out: Path) -> tuple[list[dict], dict]:
    """The questions of this run (read, or generated Countdown problems), written to problems.jsonl."""
    from steiner.countdown import generate_problems

    refs: dict = {}
    if cfg.questions:
        questions, refs = load_questions(cfg.questions)
    else:
        gen = dict(num_numbers=tuple(cfg.num_numbers), number_range=tuple(cfg.number_range),
                   target_range=tuple(cfg.target_range), test_fraction=cfg.test_fraction)
        questions = generate_problems(cfg.problems, cfg.seed, split="train", number_orders=cfg.number_orders, **gen)
        if cfg.test_problems:
            write_jsonl(out / "test_problems.jsonl",
                        generate_problems(cfg.test_problems, cfg.seed, split="test", **gen))
    write_jsonl(out / "problems.jsonl", questions)
    return questions, refs


def truncate(cfg: SynthConfig) -> dict[str, Any]:
    """Stage 1: problems.jsonl and steps.jsonl (method one), resumable; returns its stats section."""
    from steiner.synth.teacher import Question
    from steiner.synth.truncate import synthesize_truncations

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    questions, refs = prepare_questions(cfg, out)
    teacher = make_teacher(cfg, out)
    trunc = synthesize_truncations([Question.from_record(q) for q in questions], teacher, out / "steps.jsonl",
                                   cuts=cfg.cuts, attempts=cfg.attempts, forward_steps=cfg.forward_steps,
                                   seed=cfg.seed, concurrency=cfg.concurrency, references=refs,
                                   progress=cfg.progress, close_teacher=True)
    section: dict[str, Any] = {
        "questions": len(questions),
        "truncation": {"written": trunc.written, "skipped": trunc.skipped, "failed": trunc.failed,
                       "errors": trunc.errors[:20]},
        "teacher": teacher.name,
    }
    if hasattr(teacher, "stats"):
        section["teacher_stats"] = teacher.stats.as_dict()
    update_stats(out, section)
    return section


# ---------------------------------------------------------------- stage 2: DAGs


def _record_id(rec: dict) -> list:
    return [rec.get("cut"), rec.get("attempt", 0)]


def _steps_by_question(out: Path, questions: list[dict]) -> dict[str, list[dict]]:
    from steiner.jsonl import read_jsonl

    if not (out / "steps.jsonl").is_file():
        raise FileNotFoundError(f"steps file {str(out / 'steps.jsonl')!r} does not exist; run `steiner synth "
                                "truncate` first")
    wanted = {q["id"] for q in questions}
    by_q: dict[str, list[dict]] = defaultdict(list)
    for r in read_jsonl(out / "steps.jsonl", "steps", resumable=True):
        if r["question_id"] in wanted:
            by_q[r["question_id"]].append(r)
    return by_q


def build_dags(cfg: SynthConfig) -> dict[str, Any]:
    """Stage 2: answer checks, clustering and dags.jsonl; returns its stats section."""
    from rich.progress import Progress

    from steiner.format import step_from_dict
    from steiner.synth.cluster import Embedder, mark_dead_ends, step_text
    from steiner.synth.dag import build_dag, write_dags
    from steiner.synth.sample import domain_hooks
    from steiner.synth.verify import Verifier

    out = Path(cfg.out)
    questions = _read(out / "problems.jsonl", "problems", "truncate")
    by_q = _steps_by_question(out, questions)
    embedder = Embedder() if cfg.cluster != "key" else None
    outcomes: Counter = Counter()
    rejects: list[dict] = []
    todo: list[tuple[dict, list[dict], list[list]]] = []  # (question, kept records, unverified record ids)
    n_records = 0
    for q in questions:  # pass 1: answer checks
        recs = by_q.get(q["id"])
        if not recs:
            continue
        n_records += len(recs)
        unverified: list[list] = []
        if cfg.verify:
            verifier = Verifier(q)
            kept = []
            for r in recs:
                verdict = verifier.check(r)
                outcomes[verdict.outcome] += 1
                if verdict.keep:
                    if verdict.mark:
                        unverified.append(_record_id(r))
                    kept.append(r)
                else:
                    rejects.append({"question_id": q["id"], "record": _record_id(r), "kind": r.get("kind"),
                                    "reason": verdict.outcome, "detail": verdict.detail, "steps_record": r})
            recs = kept
        if recs:
            todo.append((q, recs, unverified))
    if embedder is not None:  # embed every step of the keyless questions in one go (batched, memoised)
        texts = [step_text(step_from_dict(s)) for q, recs, _ in todo
                 if cfg.cluster == "embedding" or domain_hooks(q, cfg.seed).key_fn is None
                 for r in recs for s in r["steps"]]
        if texts:
            embedder.encode(texts)
    dags: list[dict] = []
    with Progress(disable=not cfg.progress) as bar:  # pass 2: clustering and DAGs
        task = bar.add_task("DAGs", total=len(todo))
        for q, recs, unverified in todo:
            bar.advance(task)
            dom = domain_hooks(q, cfg.seed)
            key_fn = dom.key_fn if cfg.cluster != "embedding" else None
            mark_dead_ends(recs)
            dag = build_dag(recs, key_fn=key_fn, embedder=embedder, threshold=cfg.similarity,
                            answer_ok=Verifier(q).correct)
            rec = dag.to_record()
            rec["record_ids"] = [_record_id(r) for r in recs]
            rec["record_nodes"] = dag.record_nodes
            rec["unverified_backtracks"] = unverified  # kept, though nothing could check the abandoned attempt
            dags.append(rec)
    write_dags(out / "dags.jsonl", dags)  # the schema's one writer checks every record
    write_jsonl(out / "rejects_verify.jsonl", rejects)
    section = {"steps_records": n_records, "dags": len(dags),
               "verification": {"enabled": cfg.verify, "outcomes": dict(sorted(outcomes.items())),
                                "rejected": len(rejects)}}
    update_stats(out, section)
    return section


# ---------------------------------------------------------------- stage 3: paths


def replay_dag(record: dict, steps_records: list[dict], answer_ok: Any = None) -> Any:
    """The `StepDAG` of a ``dags.jsonl`` record, rebuilt from its step records without clustering.

    Each step is given the node `build_dags` put it in (``record_nodes``), so the replay reproduces
    the same graph and the same steps on each edge.
    """
    from steiner.synth.dag import build_dag

    index = {(r.get("cut"), r.get("attempt", 0)): r for r in steps_records}
    recs = []
    for rid, nodes in zip(record["record_ids"], record["record_nodes"], strict=True):
        src = index.get((rid[0], rid[1]))
        if src is None or len(src["steps"]) != len(nodes):
            raise ValueError(f"dags.jsonl: question {record['question_id']!r} names step record {rid} that "
                             "steps.jsonl does not hold (rerun `steiner synth dag`)")
        steps = [{**s, "meta": {**(s.get("meta") or {}), "_node": n}} for s, n in zip(src["steps"], nodes,
                                                                                     strict=True)]
        recs.append({**src, "steps": steps})
    return build_dag(recs, key_fn=lambda s: s.meta.get("_node"), answer_ok=answer_ok)


def sample(cfg: SynthConfig) -> dict[str, Any]:
    """Stage 3: paths.jsonl (sampled, optimal and reference paths, length filtered), stats and histogram."""
    from rich.progress import Progress

    from steiner.synth.filters import filter_paths, load_filter_tokenizer, plot_histogram, synth_stats
    from steiner.synth.prompts import language_share
    from steiner.synth.sample import domain_hooks, optimal_path, reference_paths, sample_paths
    from steiner.synth.verify import Verifier

    out = Path(cfg.out)
    tokenizer = load_filter_tokenizer(cfg.tokenizer)
    questions = {q["id"]: q for q in _read(out / "problems.jsonl", "problems", "truncate")}
    dags = _read(out / "dags.jsonl", "DAGs", "dag")
    by_q = _steps_by_question(out, list(questions.values()))
    paths: list[dict] = []
    with Progress(disable=not cfg.progress) as bar:
        task = bar.add_task("paths", total=len(dags))
        for rec in dags:
            bar.advance(task)
            q = questions.get(rec["question_id"])
            if q is None:
                continue
            dom = domain_hooks(q, cfg.seed)
            dag = replay_dag(rec, by_q.get(q["id"], []), Verifier(q).correct)
            paths += sample_paths(dag, cfg.paths_per_dag, cfg.seed, explore_prob=cfg.explore_prob,
                                  max_backtracks=cfg.max_backtracks, reflect_fn=dom.reflect_fn,
                                  answer_fn=dom.answer_fn, order_fn=dom.order_fn)
            if cfg.include_optimal:
                opt_rec = optimal_path(dag, cfg.seed, dom.answer_fn)
                if opt_rec is not None:
                    paths.append(opt_rec)
            if cfg.include_reference:
                paths += reference_paths(dag)
    kept, tokens, dropped = filter_paths(paths, tokenizer, max_reasoning_tokens=cfg.max_reasoning_tokens,
                                         max_total_tokens=cfg.max_total_tokens)
    write_jsonl(out / "paths.jsonl", kept)
    section = synth_stats(dags, kept, tokens, dropped)
    section["language"] = language_share(kept)
    plot_histogram(tokens, out / "reasoning_tokens.png")
    return update_stats(out, section)


# ---------------------------------------------------------------- all stages


def main(cfg: SynthConfig) -> dict[str, Any]:
    """Run synthesis end to end into ``cfg.out``; returns the statistics written to stats.json."""
    from rich.console import Console

    from steiner.synth.filters import load_filter_tokenizer

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stats.json").unlink(missing_ok=True)  # a full run reports only itself
    load_filter_tokenizer(cfg.tokenizer)  # fail early on a bad tokenizer option
    trunc = truncate(cfg)
    build_dags(cfg)
    stats = sample(cfg)
    if cfg.progress:
        rt = stats["reasoning_tokens"]
        Console(stderr=True).print(
            f"[bold green]synth[/] {stats['questions']} questions -> {stats['steps_records']} step records, "
            f"{stats['dags']} DAGs, {stats['paths']} paths (dropped {stats['dropped_by_length_filter']}); "
            f"reasoning tokens mean {rt.get('mean', 0)} p90 {rt.get('p90', 0)}; failed attempts "
            f"{trunc['truncation']['failed']}; rejected by checks {stats['verification']['rejected']} -> {out}")
    return stats


STAGES = {"truncate": truncate, "dag": build_dags, "sample": sample, "run": main}
