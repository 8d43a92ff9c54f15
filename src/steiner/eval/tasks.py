"""Evaluation tasks declared as data: where to load questions from, how to prompt, how to grade.

A `TaskSpec` names its source (a local JSONL/JSON/CSV/Parquet file or a Hugging Face hub dataset),
its columns and its answer type; `load_items` turns it into `EvalItem`s, the one shape the runner,
the grader and the metrics see. Multiple-choice sources come in three shapes, all handled here:
a list column of choices (MMLU ``choices``, MMLU-Pro ``options``), separate columns (``A``..``D``),
or one correct and several incorrect columns (GPQA's "Correct Answer", "Incorrect Answer 1..3").
The gold answer may be a letter, a 0-based index, or the text of a choice.

Steiner's models answer without chain-of-thought prompting (they reason in their own tokens), so
prompts are just the question, lettered choices and "Answer with the letter."
"""

from __future__ import annotations

import csv
import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from steiner.grading import LETTERS
from steiner.jsonl import read_jsonl

AnswerType = Literal["choice", "number", "math", "countdown", "text"]
ANSWER_TYPES: tuple[str, ...] = ("choice", "number", "math", "countdown", "text")

CHOICE_PROMPT = "{question}\n\n{choices}\n\nAnswer with the letter."
DEFAULT_PROMPT = "{question}"


class TaskError(ValueError):
    """A task, file, column or row that cannot be used; the message names it."""


@dataclass
class TaskSpec:
    """What to load, how to prompt and how to grade; no code, so tasks are easy to add or override.

    ``path`` is a local file (format from its suffix unless ``format`` says otherwise) or a hub
    dataset name (loaded with `datasets.load_dataset(path, subset, split=split)`). For choices give
    ONE of ``choices_column`` (a list column), ``choice_columns`` (one column per choice) or
    ``incorrect_columns`` (then ``answer_column`` holds the correct text, as in GPQA). Choices are
    shuffled per question with ``shuffle_seed`` when it is set; GPQA's shape always is (its correct
    answer is always first), with seed 0 unless one is given.
    """

    name: str
    answer_type: AnswerType = "text"
    path: str = ""
    split: str = "test"
    subset: str | None = None
    format: Literal["auto", "jsonl", "json", "csv", "parquet", "hub"] = "auto"
    prompt: str | None = None
    id_column: str | None = "id"
    question_column: str = "question"
    answer_column: str = "answer"
    choices_column: str | None = None
    choice_columns: list[str] | None = None
    incorrect_columns: list[str] | None = None
    shuffle_seed: int | None = None
    numbers_column: str = "numbers"
    target_column: str = "target"
    where: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if self.answer_type not in ANSWER_TYPES:
            raise TaskError(f"task {self.name!r}: answer_type must be one of {list(ANSWER_TYPES)}, got {self.answer_type!r}")
        shapes = [x for x in (self.choices_column, self.choice_columns, self.incorrect_columns) if x]
        if len(shapes) > 1:
            raise TaskError(f"task {self.name!r}: give only one of choices_column, choice_columns, incorrect_columns")
        if self.answer_type == "choice" and not shapes:
            raise TaskError(f"task {self.name!r}: a choice task needs choices_column, choice_columns or incorrect_columns")
        if self.incorrect_columns and self.shuffle_seed is None:
            self.shuffle_seed = 0

    @property
    def template(self) -> str:
        return self.prompt or (CHOICE_PROMPT if self.answer_type == "choice" else DEFAULT_PROMPT)

    def with_source(self, path: str, **overrides: Any) -> TaskSpec:
        """A copy reading ``path`` (format from its suffix), other fields overridden."""
        return dataclasses.replace(self, path=path, format="auto", **overrides)


@dataclass
class EvalItem:
    """One question as the runner sees it: the user prompt, the gold answer and the lettered choices."""

    id: str
    prompt: str
    answer: str
    choices: list[str] | None = None
    numbers: list[int] | None = None
    target: int | None = None
    record: dict[str, Any] = field(default_factory=dict)


_GPQA_INCORRECT = ["Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]

BUILTIN_TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec(
            "gpqa_diamond", "choice", path="Idavidrein/gpqa", subset="gpqa_diamond", split="train",
            id_column="Record ID", question_column="Question", answer_column="Correct Answer",
            incorrect_columns=_GPQA_INCORRECT, shuffle_seed=0,
            description="GPQA-Diamond, 198 graduate-level science questions, 4 choices shuffled with a seed",
        ),
        TaskSpec(
            "mmlu", "choice", path="cais/mmlu", subset="all", split="test", id_column=None,
            choices_column="choices", description="MMLU, 57 subjects, 4 choices, answer is a 0-based index",
        ),
        TaskSpec(
            "mmlu_pro", "choice", path="TIGER-Lab/MMLU-Pro", split="test", id_column="question_id",
            choices_column="options", description="MMLU-Pro, up to 10 choices, answer is a letter",
        ),
        TaskSpec(
            "countdown", "countdown", split="test", where={"split": "test"},
            description="Countdown: reach the target from the numbers (a local file from `steiner synth`/"
            "`steiner.countdown.generate_problems`; rows whose split is 'test')",
        ),
        TaskSpec("math", "math", description="exact answers graded with math-verify (JSONL with question/answer)"),
        TaskSpec(
            "mc_sample", "choice", path=str(Path(__file__).parent.parent / "data" / "mc_sample.jsonl"),
            choices_column="choices", description="a few hand-written multiple-choice questions shipped with steiner",
        ),
    ]
}


def get_task(name: str) -> TaskSpec:
    """A built-in task spec by name (a copy), or TaskError listing the known names."""
    if name not in BUILTIN_TASKS:
        raise TaskError(f"unknown task {name!r}; built-in tasks: {sorted(BUILTIN_TASKS)}")
    return dataclasses.replace(BUILTIN_TASKS[name])


# ---------------------------------------------------------------- reading rows


def _suffix_format(path: Path) -> str:
    name = path.name.lower()
    for suffix, fmt in ((".jsonl", "jsonl"), (".json", "json"), (".csv", "csv"), (".parquet", "parquet")):
        if name.endswith(suffix):
            return fmt
    raise TaskError(f"{path}: cannot tell the format from the file name; use .jsonl, .json, .csv or .parquet")


def read_rows(spec: TaskSpec) -> tuple[list[dict[str, Any]], str]:
    """The raw rows of a task's source and a name for it (used in error messages)."""
    if not spec.path:
        raise TaskError(f"task {spec.name!r} has no source; pass a local file (--data FILE)")
    p = Path(spec.path)
    fmt = spec.format
    if fmt == "auto":
        if p.exists() or any(spec.path.lower().endswith(s) for s in (".jsonl", ".json", ".csv", ".parquet")):
            fmt = _suffix_format(p)
        else:
            fmt = "hub"
    if fmt == "hub":
        return _read_hub(spec), f"{spec.path}[{spec.subset or ''}:{spec.split}]"
    if not p.is_file():
        raise TaskError(f"data file {str(p)!r} does not exist")
    if fmt == "jsonl":
        try:
            rows = read_jsonl(p, "data")
        except ValueError as e:
            raise TaskError(str(e)) from e
    elif fmt == "json":
        data = json.loads(p.read_text(encoding="utf-8"))
        rows = data if isinstance(data, list) else data.get("data") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise TaskError(f"{p}: expected a JSON list of records (or {{'data': [...]}})")
    elif fmt == "csv":
        with p.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(p).to_pylist()
    else:
        raise TaskError(f"task {spec.name!r}: unknown format {fmt!r}")
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise TaskError(f"{p}: row {i} is not a record (got {type(r).__name__})")
    return rows, str(p)


def _read_hub(spec: TaskSpec) -> list[dict[str, Any]]:
    from datasets import load_dataset

    try:
        ds = load_dataset(spec.path, spec.subset, split=spec.split)
    except Exception as e:  # noqa: BLE001 - re-raised naming the dataset
        raise TaskError(f"could not load hub dataset {spec.path!r} (subset {spec.subset!r}, split {spec.split!r}): {e}") from e
    return [dict(r) for r in ds]


# ---------------------------------------------------------------- rows -> items


def _require(rows: list[dict], column: str, what: str, source: str) -> None:
    if rows and column not in rows[0]:
        raise TaskError(f"{source}: the {what} column {column!r} is missing; columns: {sorted(rows[0])}")


def _as_list(value: Any, column: str, where: str) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)  # a CSV cell holding a JSON list
        except json.JSONDecodeError:
            value = None
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list | tuple) or not value:
        raise TaskError(f"{where}: column {column!r} must hold a non-empty list of choices, got {value!r}")
    return [str(v) for v in value]


def _gold_index(answer: Any, choices: list[str], where: str) -> int:
    """A letter, a 0-based index or the text of a choice -> the index of the correct choice."""
    n = len(choices)
    if isinstance(answer, bool) or answer is None or answer == "":
        raise TaskError(f"{where}: the answer is empty")
    if isinstance(answer, int | float) and float(answer).is_integer():
        idx = int(answer)
    else:
        s = str(answer).strip()
        s_letter = s.strip("().").upper()
        if len(s_letter) == 1 and s_letter in LETTERS:
            idx = LETTERS.index(s_letter)
            if idx >= n:
                raise TaskError(f"{where}: answer letter {s_letter!r} is outside the {n} choices A-{LETTERS[n - 1]}")
        elif s.isdigit():
            idx = int(s)
        elif s in choices:
            return choices.index(s)
        else:
            raise TaskError(f"{where}: answer {s!r} is neither a letter, an index nor the text of a choice")
    if not 0 <= idx < n:
        raise TaskError(f"{where}: answer index {idx} is outside the {n} choices (0-{n - 1})")
    return idx


def format_choices(choices: list[str]) -> str:
    """Lettered choices, one a line: "A. ...\\nB. ..."."""
    return "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))


def _jsonable(record: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in record.items():
        if hasattr(v, "tolist"):
            v = v.tolist()
        try:
            json.dumps(v)
        except TypeError:
            v = str(v)
        out[str(k)] = v
    return out


def _fill(spec: TaskSpec, record: dict[str, Any], question: str, choices: list[str] | None, where: str) -> str:
    values = {**{str(k): v for k, v in record.items()}, "question": question}
    if choices is not None:
        values["choices"] = format_choices(choices)
    try:
        return spec.template.format_map(values)
    except KeyError as e:
        raise TaskError(f"{where}: the prompt template of task {spec.name!r} uses {{{e.args[0]}}}, "
                        f"which the record lacks; fields: {sorted(values)}") from e


def rows_to_items(spec: TaskSpec, rows: list[dict[str, Any]], source: str) -> list[EvalItem]:
    """Validate rows against ``spec`` and build items; errors name the file, the column or the row."""
    rows = [r for r in rows if all(r.get(k, v) == v for k, v in spec.where.items())]
    _require(rows, spec.question_column, "question", source)
    _require(rows, spec.answer_column, "answer", source)
    if spec.choices_column:
        _require(rows, spec.choices_column, "choices", source)
    for c in (spec.choice_columns or []) + (spec.incorrect_columns or []):
        _require(rows, c, "choice", source)
    if spec.answer_type == "countdown":
        _require(rows, spec.numbers_column, "numbers", source)
        _require(rows, spec.target_column, "target", source)
    items: list[EvalItem] = []
    seen: dict[str, int] = {}
    for i, r in enumerate(rows):
        rid = r.get(spec.id_column) if spec.id_column else None
        qid = str(rid) if rid not in (None, "") else str(i)
        where = f"{source}: row {i} (id {qid!r})"
        if qid in seen:
            raise TaskError(f"{where}: the id repeats row {seen[qid]}; ids must be unique")
        seen[qid] = i
        question = r.get(spec.question_column)
        if question in (None, ""):
            raise TaskError(f"{where}: the question ({spec.question_column!r}) is empty")
        answer = r.get(spec.answer_column)
        choices = None
        numbers = target = None
        if spec.answer_type == "choice":
            if spec.choices_column:
                choices = _as_list(r.get(spec.choices_column), spec.choices_column, where)
                gold = _gold_index(answer, choices, where)
            elif spec.choice_columns:
                choices = [str(r.get(c, "")) for c in spec.choice_columns]
                if spec.answer_column in spec.choice_columns:
                    raise TaskError(f"task {spec.name!r}: the answer column cannot also be a choice column")
                gold = _gold_index(answer, choices, where)
            else:
                if answer in (None, ""):
                    raise TaskError(f"{where}: the correct answer ({spec.answer_column!r}) is empty")
                choices = [str(answer).strip()] + [str(r.get(c, "")).strip() for c in spec.incorrect_columns or []]
                gold = 0
            if spec.shuffle_seed is not None:
                order = list(range(len(choices)))
                random.Random(f"{spec.shuffle_seed}:{qid}").shuffle(order)
                choices = [choices[j] for j in order]
                gold = order.index(gold)
            gold_text = LETTERS[gold]
        else:
            if answer is None or (isinstance(answer, str) and not answer.strip()):
                raise TaskError(f"{where}: the answer ({spec.answer_column!r}) is empty")
            gold_text = str(answer).strip()
            if spec.answer_type == "countdown":
                try:
                    numbers = [int(x) for x in _as_list(r.get(spec.numbers_column), spec.numbers_column, where)]
                    target = int(r.get(spec.target_column))
                except (TypeError, ValueError) as e:
                    raise TaskError(f"{where}: numbers/target must be integers: {e}") from e
        items.append(EvalItem(
            id=qid, prompt=_fill(spec, r, str(question), choices, where), answer=gold_text,
            choices=choices, numbers=numbers, target=target, record=_jsonable(r),
        ))
    return items


def load_items(spec: TaskSpec, limit: int | None = None) -> list[EvalItem]:
    """Read, validate and convert a task's rows; ``limit`` keeps the first N questions."""
    rows, source = read_rows(spec)
    items = rows_to_items(spec, rows, source)
    if not items:
        kept = "".join(f"; it keeps only rows whose {k} is {v!r}" for k, v in spec.where.items())
        hint = " (--split selects another)" if rows and "split" in spec.where else ""
        raise TaskError(f"{source}: no questions for task {spec.name!r} in its {len(rows)} rows{kept}{hint}")
    return items[:limit] if limit else items


def infer_spec(path: str, name: str | None = None) -> TaskSpec:
    """Guess a task spec from a local file's columns: GPQA, list or lettered choices, Countdown, else math."""
    spec = TaskSpec(name or Path(path).stem, "math", path=path)
    rows, _ = read_rows(spec)
    cols = set(rows[0]) if rows else set()
    base: dict[str, Any] = {"id_column": "id" if "id" in cols else None}
    if "Correct Answer" in cols and "Incorrect Answer 1" in cols:
        inc = [c for c in _GPQA_INCORRECT if c in cols]
        return dataclasses.replace(get_task("gpqa_diamond"), name=spec.name, path=path, format="auto",
                                   incorrect_columns=inc, id_column="Record ID" if "Record ID" in cols else None)
    for col in ("choices", "options"):
        if col in cols:
            return TaskSpec(spec.name, "choice", path=path, choices_column=col, **base)
    lettered = [c for c in LETTERS[:10] if c in cols]
    if len(lettered) >= 2 and lettered == list(LETTERS[: len(lettered)]):
        return TaskSpec(spec.name, "choice", path=path, choice_columns=lettered, **base)
    if {"numbers", "target"} <= cols:
        return dataclasses.replace(get_task("countdown"), name=spec.name, path=path, **base)
    return TaskSpec(spec.name, "math", path=path, **base)


def resolve_task(task: str | None, data: str | None, *, answer_type: str | None = None,
                 split: str | None = None) -> TaskSpec:
    """The spec for `steiner eval --task/--data`: a built-in task (its source replaced by ``data`` when
    given) or one inferred from ``data``'s columns; ``answer_type`` and ``split`` override."""
    if not task and not data:
        raise TaskError("give a task (--task NAME) or a data file (--data FILE)")
    if task:
        spec = get_task(task)
        if data:
            spec = spec.with_source(data)
    else:
        spec = infer_spec(data)  # type: ignore[arg-type]
    if split:
        spec.split = split
        if "split" in spec.where:  # a local file's rows carry their split (countdown): select that one
            spec.where = {**spec.where, "split": split}
    if answer_type and answer_type != spec.answer_type:
        spec = dataclasses.replace(spec, answer_type=answer_type)
    return spec
