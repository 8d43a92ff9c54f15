"""`steiner compare`: pooled samples per side, the paired difference computed by hand on a tiny case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steiner.cli import main as cli
from steiner.config import ConfigError
from steiner.eval.compare import CompareConfig, main


def _eval_dir(path: Path, marks: dict[str, list[bool]]) -> str:
    path.mkdir(parents=True)
    with open(path / "samples.jsonl", "w") as f:
        for q, cs in marks.items():
            for i, c in enumerate(cs):
                f.write(json.dumps({"question_id": q, "sample": i, "correct": c}) + "\n")
    return str(path)


def test_pooled_folders_and_the_paired_difference(tmp_path: Path, capsys) -> None:
    a1 = _eval_dir(tmp_path / "a1", {"q1": [True], "q2": [True]})
    a2 = _eval_dir(tmp_path / "a2", {"q1": [True], "q2": [False]})  # pooled: q1 1.0, q2 0.5
    b = _eval_dir(tmp_path / "b", {"q1": [True, False], "q2": [False, False], "q3": [True]})  # 0.5, 0.0, (1.0)
    rep = main(CompareConfig(a=[a1, a2], b=[b]))
    # every shared question differs by exactly +0.5, so every bootstrap mean is +0.5
    assert rep["difference"] == pytest.approx(0.5) and rep["ci"] == pytest.approx([0.5, 0.5])
    assert rep["shared_questions"] == 2
    assert rep["a"] == {"pass@1": 0.75, "questions": 2, "samples": 4}
    assert rep["b"]["pass@1"] == pytest.approx(0.5) and rep["b"]["questions"] == 3
    assert cli(["compare", "--b", f"{a1},{a2}", "--a", str(Path(b) / "samples.jsonl")]) == 0
    assert "A - B: -50.0 points (95% CI -50.0 to -50.0), paired over 2 shared questions" in capsys.readouterr().out


def test_bad_input_names_the_problem(tmp_path: Path, capsys) -> None:
    b = _eval_dir(tmp_path / "b", {"q1": [True]})
    with pytest.raises(ConfigError, match="--a: give at least one"):
        CompareConfig(a=[], b=[b])
    assert cli(["compare", "--a", str(tmp_path / "missing"), "--b", b]) == 2
    assert "missing: no samples.jsonl" in " ".join(capsys.readouterr().err.split())  # rich wraps lines
    other = _eval_dir(tmp_path / "other", {"q9": [True]})
    assert cli(["compare", "--a", other, "--b", b]) == 2
    assert "share no question" in " ".join(capsys.readouterr().err.split())
