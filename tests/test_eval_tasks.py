"""Task loading: JSONL/CSV/Parquet files in each multiple-choice shape, Countdown, inference, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from steiner.eval.tasks import (
    BUILTIN_TASKS,
    LETTERS,
    TaskError,
    TaskSpec,
    get_task,
    infer_spec,
    load_items,
    resolve_task,
)

MMLU_ROWS = [  # MMLU shape: a list column and a 0-based index
    {"question": "2 + 2 = ?", "choices": ["3", "4", "5", "22"], "answer": 1, "subject": "math"},
    {"question": "Capital of France?", "choices": ["Rome", "Madrid", "Paris", "Berlin"], "answer": 2, "subject": "geo"},
]
PRO_ROWS = [  # MMLU-Pro shape: options (up to 10) and a letter
    {"question_id": 70, "question": "Pick the prime.", "options": ["4", "6", "8", "9", "10", "11"], "answer": "F"},
    {"question_id": 71, "question": "Pick the even.", "options": ["1", "3", "2"], "answer": "C"},
]
LETTER_ROWS = [  # separate A..D columns, answer as a letter
    {"id": "x1", "question": "Largest?", "A": "1", "B": "9", "C": "3", "D": "5", "answer": "B"},
    {"id": "x2", "question": "Smallest?", "A": "7", "B": "9", "C": "3", "D": "5", "answer": "C"},
]
GPQA_ROWS = [  # GPQA shape: the correct answer and three incorrect ones, always in that order
    {"Record ID": f"rec{i}", "Question": f"Question {i}?", "Correct Answer": f"right {i}",
     "Incorrect Answer 1": f"wrong a{i}", "Incorrect Answer 2": f"wrong b{i}", "Incorrect Answer 3": f"wrong c{i}"}
    for i in range(12)
]


def write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            for r in rows:
                w.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_mmlu_shape(tmp_path: Path, suffix: str) -> None:
    spec = get_task("mmlu").with_source(str(write(tmp_path / f"mmlu{suffix}", MMLU_ROWS)))
    items = load_items(spec)
    assert [it.answer for it in items] == ["B", "C"]
    assert [it.id for it in items] == ["0", "1"]
    assert items[0].choices == ["3", "4", "5", "22"]
    assert items[0].prompt == "2 + 2 = ?\n\nA. 3\nB. 4\nC. 5\nD. 22\n\nAnswer with the letter."


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_mmlu_pro_shape(tmp_path: Path, suffix: str) -> None:
    items = load_items(get_task("mmlu_pro").with_source(str(write(tmp_path / f"pro{suffix}", PRO_ROWS))))
    assert [(it.id, it.answer, len(it.choices)) for it in items] == [("70", "F", 6), ("71", "C", 3)]
    assert "F. 11" in items[0].prompt


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_lettered_columns_inferred(tmp_path: Path, suffix: str) -> None:
    spec = infer_spec(str(write(tmp_path / f"letters{suffix}", LETTER_ROWS)))
    assert spec.answer_type == "choice" and spec.choice_columns == ["A", "B", "C", "D"]
    items = load_items(spec)
    assert [(it.id, it.answer) for it in items] == [("x1", "B"), ("x2", "C")]
    assert items[0].choices == ["1", "9", "3", "5"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_gpqa_shape_is_shuffled_with_a_seed(tmp_path: Path, suffix: str) -> None:
    path = str(write(tmp_path / f"gpqa{suffix}", GPQA_ROWS))
    items = load_items(get_task("gpqa_diamond").with_source(path))
    for i, it in enumerate(items):
        assert it.id == f"rec{i}"
        assert sorted(it.choices) == sorted([f"right {i}", f"wrong a{i}", f"wrong b{i}", f"wrong c{i}"])
        assert it.choices[LETTERS.index(it.answer)] == f"right {i}"  # the gold letter follows the shuffle
    assert len({it.answer for it in items}) > 1  # the correct answer is not always A
    again = load_items(infer_spec(path))  # same seed, same order, also when the shape is inferred
    assert [it.choices for it in again] == [it.choices for it in items]
    other = load_items(get_task("gpqa_diamond").with_source(path, shuffle_seed=1))
    assert [it.choices for it in other] != [it.choices for it in items]


def test_answer_given_as_choice_text(tmp_path: Path) -> None:
    rows = [{"id": "t", "question": "Colour of the sky?", "choices": ["red", "blue"], "answer": "blue"}]
    items = load_items(infer_spec(str(write(tmp_path / "t.jsonl", rows))))
    assert items[0].answer == "B"


def test_builtin_mc_sample_loads() -> None:
    items = load_items(get_task("mc_sample"))
    assert len(items) >= 5
    assert all(it.choices and it.answer in LETTERS[: len(it.choices)] for it in items)
    assert set(BUILTIN_TASKS) >= {"gpqa_diamond", "mmlu", "mmlu_pro", "countdown", "math"}


def test_countdown_from_generated_problems(tmp_path: Path) -> None:
    from steiner.countdown import generate_problems

    problems = generate_problems(40, seed=3, test_fraction=0.25)
    path = write(tmp_path / "countdown.jsonl", problems)
    items = load_items(resolve_task("countdown", str(path)))
    test_ids = [p["id"] for p in problems if p["split"] == "test"]
    assert [it.id for it in items] == test_ids  # only the test split is evaluated
    assert items[0].numbers == problems[[p["id"] for p in problems].index(test_ids[0])]["numbers"]
    assert infer_spec(str(path)).answer_type == "countdown"
    assert load_items(resolve_task("countdown", str(path)), limit=2)[-1].id == test_ids[1]


def test_countdown_split_selects_the_rows_of_that_split(tmp_path: Path) -> None:
    from steiner.countdown import generate_problems

    problems = generate_problems(40, seed=3, test_fraction=0.25)
    path = write(tmp_path / "countdown.jsonl", problems)
    items = load_items(resolve_task("countdown", str(path), split="train"))
    assert [it.id for it in items] == [p["id"] for p in problems if p["split"] == "train"]
    train = [p for p in problems if p["split"] == "train"]
    train_only = write(tmp_path / "train.jsonl", train)
    with pytest.raises(TaskError, match=rf"in its {len(train)} rows; it keeps only rows whose split is 'test' \(--split"):
        load_items(resolve_task("countdown", str(train_only)))


def test_math_task_and_custom_template(tmp_path: Path) -> None:
    path = write(tmp_path / "m.jsonl", [{"id": "m1", "question": "1/2 + 1/4 = ?", "answer": "3/4", "level": 2}])
    spec = resolve_task("math", str(path))
    spec.prompt = "Level {level}: {question}"
    (it,) = load_items(spec)
    assert it.prompt == "Level 2: 1/2 + 1/4 = ?" and it.answer == "3/4"
    assert infer_spec(str(path)).answer_type == "math"


# ---------------------------------------------------------------- bad input


def test_missing_answer_column_names_column_and_file(tmp_path: Path) -> None:
    path = write(tmp_path / "noans.jsonl", [{"question": "q?", "choices": ["a", "b"]}])
    with pytest.raises(TaskError, match=r"noans\.jsonl.*answer column 'answer' is missing"):
        load_items(get_task("mmlu").with_source(str(path)))


def test_missing_choices_column_names_column_and_file(tmp_path: Path) -> None:
    path = write(tmp_path / "nochoices.csv", [{"question": "q?", "answer": "A"}])
    with pytest.raises(TaskError, match=r"nochoices\.csv.*choices column 'choices' is missing"):
        load_items(get_task("mmlu").with_source(str(path)))
    gpqa = write(tmp_path / "gpqa.csv", [{k: v for k, v in GPQA_ROWS[0].items() if k != "Incorrect Answer 2"}])
    with pytest.raises(TaskError, match=r"gpqa\.csv.*'Incorrect Answer 2' is missing"):
        load_items(get_task("gpqa_diamond").with_source(str(gpqa)))


def test_answer_letter_outside_choices_names_the_row(tmp_path: Path) -> None:
    rows = LETTER_ROWS + [{"id": "bad", "question": "?", "A": "1", "B": "2", "C": "3", "D": "4", "answer": "E"}]
    path = write(tmp_path / "letters.jsonl", rows)
    with pytest.raises(TaskError, match=r"row 2 \(id 'bad'\): answer letter 'E' is outside the 4 choices A-D"):
        load_items(infer_spec(str(path)))
    rows = [{"question": "?", "choices": ["a", "b"], "answer": 5}]
    with pytest.raises(TaskError, match=r"row 0.*index 5 is outside the 2 choices"):
        load_items(get_task("mmlu").with_source(str(write(tmp_path / "idx.jsonl", rows))))


def test_other_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="does not exist"):
        load_items(get_task("mmlu").with_source(str(tmp_path / "missing.jsonl")))
    with pytest.raises(TaskError, match="unknown task 'nope'"):
        get_task("nope")
    with pytest.raises(TaskError, match="has no source"):
        load_items(get_task("math"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "1"}\n{not json\n')
    with pytest.raises(TaskError, match=r"bad\.jsonl: line 2 is not valid JSON"):
        load_items(resolve_task("math", str(bad)))
    dup = write(tmp_path / "dup.jsonl", [{"id": "a", "question": "q", "answer": "1"}] * 2)
    with pytest.raises(TaskError, match=r"row 1 \(id 'a'\): the id repeats row 0"):
        load_items(resolve_task("math", str(dup)))
    empty = write(tmp_path / "empty.jsonl", [{"id": "a", "question": "q", "answer": ""}])
    with pytest.raises(TaskError, match=r"row 0 \(id 'a'\): the answer \('answer'\) is empty"):
        load_items(resolve_task("math", str(empty)))
    with pytest.raises(TaskError, match="uses {missing}"):
        load_items(TaskSpec("x", "math", path=str(empty).replace("empty", "dup"), prompt="{missing}", id_column=None))
    with pytest.raises(TaskError, match="needs choices_column"):
        TaskSpec("x", "choice")
