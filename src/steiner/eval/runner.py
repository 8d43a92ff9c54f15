"""`steiner eval`: sample n answers per question from a backend, grade them, cache them, report.

Every sample is one line of ``samples.jsonl`` in the output folder, keyed by (task, question id,
sample index, generation-settings hash). A rerun reads the file and generates only the samples it
lacks (and those whose request failed), so an interrupted run resumes where it stopped; one file can
hold several settings, which is how `steiner sweep` shares it across grid cells.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from steiner.config import ConfigError, check_range, opt, to_dict
from steiner.domain import verify_steps
from steiner.eval.backends import EndpointBackend, GenSettings, LocalBackend, Output, Request
from steiner.eval.metrics import per_question, summarize
from steiner.eval.tasks import EvalItem, TaskSpec, load_items, resolve_task
from steiner.format import parse
from steiner.grading import grade
from steiner.jsonl import drop_partial_line, dump_line, read_jsonl


@dataclass
class EvalConfig:
    """Options of `steiner eval` (and, with a grid, of `steiner sweep`)."""

    task: str | None = opt(None, "built-in task: gpqa_diamond, mmlu, mmlu_pro, countdown, math, mc_sample")
    data: str | None = opt(None, "local JSONL/JSON/CSV/Parquet file (or hub dataset name); with --task it replaces the task's source, alone the task is inferred from its columns")
    split: str | None = opt(None, "dataset split (overrides the task's; for countdown, the rows whose split column has this value)")
    answer_type: str | None = opt(None, "override the answer type: choice, number, math, countdown, text")
    limit: int | None = opt(None, "evaluate only the first N questions")
    model: str | None = opt(None, "local save_pretrained folder (model + tokenizer) to evaluate")
    base_url: str | None = opt(None, "OpenAI-compatible endpoint to evaluate instead, e.g. http://localhost:8000/v1")
    model_name: str | None = opt(None, "model name sent to the endpoint")
    api_key: str | None = opt(None, "endpoint API key (default: $OPENAI_API_KEY, else 'EMPTY')")
    system_prompt: str | None = opt(None, "system message put before every question")
    n: int = opt(8, "samples per question (pass@1 is their mean; maj@n votes over all of them)")
    temperature: float = opt(0.7, "sampling temperature (0 = greedy)")
    top_p: float = opt(1.0, "nucleus sampling threshold")
    max_new_tokens: int = opt(2048, "most tokens per completion, reasoning included")
    min_steps: int = opt(0, "fewest reasoning steps before the model may end (step-bounding processor)")
    state_min_steps: bool = opt(False, "with min_steps, also state the budget in the system message "
                                       "('Take at least N steps.'), as budgeted training searches do (the demo's "
                                       "model forced to 4 steps: 0.775 stated, 0.853 not; docs/demo.md)")
    max_steps: int | None = opt(None, "most reasoning steps; the reasoning is ended after this many")
    format_strict: bool = opt(False, "keep every step well-formed with the format processor")
    max_reasoning_tokens: int | None = opt(None, "end the reasoning after this many tokens (format processor)")
    seed: int = opt(0, "sampling seed")
    batch_size: int = opt(16, "sequences per batch for a local model")
    device: str | None = opt(None, "device for a local model (default: cuda if available, else cpu)")
    concurrency: int = opt(16, "concurrent requests to an endpoint")
    max_retries: int = opt(3, "retries of a timed-out, rate-limited (429) or 5xx request, with backoff")
    timeout: float = opt(600.0, "seconds before an endpoint request times out")
    out: str = opt("runs/eval", "output folder: samples.jsonl (the cache), report.md, report.json, report.html")

    def __post_init__(self) -> None:
        check_range("n", self.n, lo=1)
        check_range("temperature", self.temperature, lo=0)
        check_range("top_p", self.top_p, lo=0, lo_open=True, hi=1)
        check_range("max_new_tokens", self.max_new_tokens, lo=1)
        check_range("limit", self.limit, lo=1)
        check_range("batch_size", self.batch_size, lo=1)
        check_range("concurrency", self.concurrency, lo=1)
        check_range("max_retries", self.max_retries, lo=0)
        self._check_steps()

    def _check_steps(self) -> None:
        check_range("min_steps", self.min_steps, lo=0)
        check_range("max_steps", self.max_steps, lo=1)
        if self.max_steps is not None and self.min_steps > self.max_steps:
            raise ConfigError(f"min_steps ({self.min_steps}) must be <= max_steps ({self.max_steps})")

    def check_source(self) -> None:
        """Exactly one backend: a local --model or an endpoint --base-url with --model-name."""
        if bool(self.model) == bool(self.base_url):
            raise ConfigError("give either a local model (--model DIR) or an endpoint (--base-url URL --model-name NAME)")
        if self.base_url and not self.model_name:
            raise ConfigError("--base-url needs --model-name (the model the endpoint serves)")

    def system_message(self) -> str | None:
        """The system message of every request: ``system_prompt``, then the step budget when stated."""
        from steiner.format import min_steps_prompt

        budget = min_steps_prompt(self.min_steps) if self.state_min_steps and self.min_steps else None
        return "\n".join(m for m in (self.system_prompt, budget) if m) or None

    def settings(self) -> GenSettings:
        return GenSettings(self.temperature, self.top_p, self.max_new_tokens, self.min_steps, self.max_steps,
                           self.format_strict, self.max_reasoning_tokens, self.seed)


def make_backend(cfg: EvalConfig) -> LocalBackend | EndpointBackend:
    """The backend ``cfg`` names (loads a local model once)."""
    cfg.check_source()
    if cfg.model:
        return LocalBackend(cfg.model, device=cfg.device, batch_size=cfg.batch_size)
    return EndpointBackend(cfg.base_url, cfg.model_name, api_key=cfg.api_key,  # type: ignore[arg-type]
                           concurrency=cfg.concurrency, max_retries=cfg.max_retries, timeout=cfg.timeout)


# ---------------------------------------------------------------- the sample cache


def sample_key(task: str, question_id: str, sample: int, settings_key: str) -> tuple[str, str, int, str]:
    return (task, str(question_id), int(sample), settings_key)


def load_samples(path: Path) -> dict[tuple, dict[str, Any]]:
    """Read the cache; a half-written last line (an interrupted run) is skipped, later lines win."""
    cache: dict[tuple, dict[str, Any]] = {}
    for rec in read_jsonl(path, "samples", resumable=True):
        try:
            cache[sample_key(rec["task"], rec["question_id"], rec["sample"], rec["settings_key"])] = rec
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path}: a sample record lacks {e} (task, question_id, sample, settings_key)") from e
    return cache


def messages_for(item: EvalItem, system_prompt: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": item.prompt}]


def make_record(spec: TaskSpec, item: EvalItem, req: Request, out: Output, settings: GenSettings,
                settings_key: str) -> dict[str, Any]:
    """One line of samples.jsonl: the completion, its grade and its statistics (under ``settings_key``,
    `GenSettings.key` of the settings and the system message)."""
    rec: dict[str, Any] = {
        "task": spec.name, "question_id": item.id, "sample": req.sample, "settings_key": settings_key,
        "settings": asdict(settings), "gold": item.answer, "failed": out.error is not None, "error": out.error,
        "text": out.text, "answer": out.answer, "reasoning_tokens": out.reasoning_tokens,
        "completion_tokens": out.completion_tokens, "finish_reason": out.finish_reason, "latency_s": out.latency_s,
    }
    if out.error is not None:
        rec.update(correct=False, extracted=None, reason=f"request failed: {out.error}", format_ok=None,
                   num_steps=None, num_backtracks=None)
        return rec
    g = grade(spec, item, out.text)
    path = parse(out.text)
    rec.update(correct=g.correct, extracted=g.extracted, reason=g.reason, format_ok=path.ok,
               num_steps=len(path.steps), num_backtracks=path.num_backtracks)
    checks = verify_steps(item.record, path.steps) if item.record and path.steps else None
    if checks is not None:
        rec["steps_verified"] = sum(c.ok for c in checks) / len(checks)
    return rec


def evaluate(spec: TaskSpec, items: list[EvalItem], backend: Any, settings: GenSettings, n: int,
             samples_path: Path, *, system_prompt: str | None = None, label: str = "") -> list[dict[str, Any]]:
    """Make sure ``samples_path`` holds n graded samples per item under ``settings``; return them.

    Cached samples are reused; missing and failed ones are generated and appended as they finish.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    samples_path.parent.mkdir(parents=True, exist_ok=True)
    cache = load_samples(samples_path)
    skey = settings.key(system_prompt)
    by_id = {it.id: it for it in items}
    todo = [
        Request(it.id, j, messages_for(it, system_prompt))
        for it in items for j in range(n)
        if (rec := cache.get(sample_key(spec.name, it.id, j, skey))) is None or rec.get("failed")
    ]
    if todo:
        drop_partial_line(samples_path)  # a half-written last line is cut before appending
        with samples_path.open("a", encoding="utf-8") as f, Progress(
            TextColumn(f"[bold]{label or spec.name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            transient=False,
        ) as progress:
            bar = progress.add_task("sampling", total=len(todo))

            def on_output(req: Request, out: Output) -> None:
                rec = make_record(spec, by_id[req.question_id], req, out, settings, skey)
                cache[sample_key(spec.name, req.question_id, req.sample, skey)] = rec
                f.write(dump_line(rec))
                f.flush()
                progress.advance(bar)

            backend.run(todo, settings, on_output)
    return [cache[sample_key(spec.name, it.id, j, skey)] for it in items for j in range(n)]


# ---------------------------------------------------------------- reports

def report_markdown(report: dict[str, Any]) -> str:
    """The Markdown of an eval report (the same numbers as report.json)."""
    from steiner.report import markdown_table

    m = report["metrics"]
    lines = [f"# Evaluation: {report['task']}", "",
             f"- model: `{report['model']}` ({report['backend']})", f"- data: `{report['source']}`",
             f"- questions: {m.get('num_questions')}, samples per question: {report['n']}, "
             f"failed requests: {m.get('num_failed')}",
             "- settings: " + ", ".join(f"{k}={v}" for k, v in report["settings"].items()), "", "## Metrics", ""]
    rows = [{"metric": k, "value": v} for k, v in m.items() if k not in ("num_questions", "num_samples", "n")]
    lines.append(markdown_table(rows, ["metric", "value"]))
    lines += ["## Per question", ""]
    lines.append(markdown_table(report["per_question"], ["id", "gold", "num_correct", "n", "majority",
                                                         "majority_correct", "num_failed"]))
    return "\n".join(lines)


def build_report(cfg: EvalConfig, spec: TaskSpec, backend: Any, samples: list[dict[str, Any]]) -> dict[str, Any]:
    desc = backend.describe()
    return {
        "task": spec.name, "answer_type": spec.answer_type, "source": spec.path,
        "backend": desc["backend"], "model": desc["model"], "base_url": desc.get("base_url"),
        "n": cfg.n, "settings": asdict(cfg.settings()), "settings_key": cfg.settings().key(cfg.system_message()),
        "metrics": summarize(samples), "per_question": per_question(samples), "config": to_dict(cfg),
    }


def main(cfg: EvalConfig, *, backend: Any = None) -> dict[str, Any]:
    """Run an evaluation; write samples.jsonl, report.json, report.md and report.html into ``cfg.out``;
    return the report.

    ``backend`` lets a caller (the sweep, the demo) reuse an already loaded model.
    """
    from rich.console import Console

    from steiner.report import write_html, write_json

    spec = resolve_task(cfg.task, cfg.data, answer_type=cfg.answer_type, split=cfg.split)
    items = load_items(spec, cfg.limit)
    backend = backend or make_backend(cfg)
    out = Path(cfg.out)
    samples = evaluate(spec, items, backend, cfg.settings(), cfg.n, out / "samples.jsonl",
                       system_prompt=cfg.system_message())
    report = build_report(cfg, spec, backend, samples)
    write_json(out / "report.json", report)
    md = report_markdown(report)
    (out / "report.md").write_text(md, encoding="utf-8")
    write_html(out / "report.html", md, title=f"steiner eval: {spec.name}")
    m = report["metrics"]
    maj = m[f"maj@{m['n']}"]
    Console(stderr=True).print(
        f"[bold]{spec.name}[/]: pass@1 {m['pass@1']:.3f}, maj@{m['n']} {maj:.3f} over "
        f"{m['num_questions']} questions x {m['n']} samples ({m['num_failed']} failed) -> {out / 'report.md'}"
    )
    return report
