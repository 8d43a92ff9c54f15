"""The demo's resumable pipeline: each stage is keyed by the full config it runs with and by its inputs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from steiner.demo.pipeline import Pipeline, referenced_stages, stage_key


def _stage(calls):
    def fn(config, d):
        calls.append(d.name)
        (d / "out.txt").write_text("x")
        return {"n": len(calls)}

    return fn


def test_pipeline_skips_finished_stages_and_reruns_changed_ones(tmp_path):
    calls = []
    started, skipped = [], []
    Pipeline(tmp_path, on_start=started.append, on_skip=skipped.append).run("a", {"k": 1}, _stage(calls))
    again = Pipeline(tmp_path, on_start=started.append, on_skip=skipped.append)
    assert again.run("a", {"k": 1}, _stage(calls)) == {"n": 1} and again.records[0].skipped
    assert calls == ["a"] and started == ["a"] and skipped == ["a"]
    Pipeline(tmp_path).run("a", {"k": 2}, _stage(calls))
    assert calls == ["a", "a"]


def test_pipeline_failed_stage_is_rerun(tmp_path):
    def boom(config, d):
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        Pipeline(tmp_path).run("a", {}, boom)
    assert Pipeline(tmp_path).run("a", {}, lambda c, d: {"ok": True}) == {"ok": True}


def test_an_interrupted_rerun_does_not_leave_the_old_marker(tmp_path):
    calls = []
    Pipeline(tmp_path).run("a", {"k": 1}, _stage(calls))

    def boom(config, d):
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        Pipeline(tmp_path).run("a", {"k": 2}, boom)  # half-written output for k=2
    Pipeline(tmp_path).run("a", {"k": 1}, _stage(calls))  # k=1 again must not trust the folder
    assert calls == ["a", "a"]


def test_a_stage_reruns_when_a_stage_it_reads_changed_and_only_then(tmp_path):
    calls = []
    fn = _stage(calls)

    def stages(k):
        p = Pipeline(tmp_path)
        p.run("a", {"k": k}, fn)
        p.run("b", {"model": str(tmp_path / "a" / "model")}, fn)  # reads a's folder
        p.run("c", {"m": 1}, fn)  # reads nothing
        p.run("d", {"m": 1}, fn, after=["a"])  # depends on a without a path
        return p

    stages(1)
    p = stages(2)
    assert calls == ["a", "b", "c", "d", "a", "b", "d"]
    assert p.record("b").inputs == ["a"] and p.record("c").inputs == [] and p.record("d").inputs == ["a"]


def _code_module(tmp_path: Path, monkeypatch, name: str) -> Path:
    """The source file of an importable module ``name`` (``VALUE = 1``), for a data stage's code key."""
    import importlib

    src = tmp_path / "code" / f"{name}.py"
    src.parent.mkdir()
    src.write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(src.parent))
    importlib.invalidate_caches()
    return src


def test_a_data_stage_reruns_when_its_code_changes_and_its_readers_only_when_the_data_did(tmp_path, monkeypatch):
    src = _code_module(tmp_path, monkeypatch, "writer_mod")
    root = tmp_path / "run"
    calls: list[str] = []
    data = {"text": "x"}

    def write(config, d):
        calls.append(d.name)
        (d / "data.txt").write_text(data["text"])
        (d / "plot.png").write_bytes(str(len(calls)).encode())  # volatile: not part of what is handed on

    def stages():
        p = Pipeline(root)
        p.run("synth", {"n": 1}, write, code=["writer_mod"])
        p.run("train", {"data": str(root / "synth" / "data.txt")}, write)
        return p

    stages()
    stages()
    assert calls == ["synth", "train"]  # nothing changed: both resume
    src.write_text("VALUE = 1  # a comment\n")
    stages()
    assert calls == ["synth", "train", "synth"]  # new code writes the same data: train still resumes
    src.write_text("VALUE = 2\n")
    data["text"] = "y"
    p = stages()
    assert calls == ["synth", "train", "synth", "synth", "train"]  # new code, new data: train reruns
    assert p.record("synth").output and p.record("train").output == ""
    # a marker from before code keys (no output digest) is not trusted
    marker = root / "synth" / "stage.json"
    import json
    done = json.loads(marker.read_text())
    done.pop("output")
    marker.write_text(json.dumps(done))
    stages()
    assert calls[-1] == "synth" and calls.count("train") == 2
    with pytest.raises(ValueError, match="not found"):
        Pipeline(root).run("x", {}, write, code=["no_such_module_here"])


@dataclass
class _Inner:
    path: Path
    n: int = 1


@dataclass
class _Outer:
    inner: _Inner
    files: list[str]
    other: str = "/elsewhere/x"


def test_stage_key_is_plain_data_with_paths_relative_to_the_root(tmp_path):
    cfg = _Outer(_Inner(tmp_path / "base" / "model"), [str(tmp_path / "synth" / "p.jsonl"), "rel.txt"])
    key = stage_key(cfg, tmp_path)
    assert key == {"inner": {"path": "<out>/base/model", "n": 1},
                   "files": ["<out>/synth/p.jsonl", "rel.txt"], "other": "/elsewhere/x"}
    assert referenced_stages(key) == {"base", "synth"}
    # the same config under another root has the same key: a moved output folder still resumes
    moved = _Outer(_Inner(tmp_path / "m" / "base" / "model"), [str(tmp_path / "m" / "synth" / "p.jsonl"), "rel.txt"])
    assert stage_key(moved, tmp_path / "m") == key
    with pytest.raises(TypeError, match="not plain data"):
        stage_key({"x": object()}, tmp_path)


# ---------------------------------------------------------------- the demo's own stages


STAGES_BEFORE_STUDY = ["synth", "base", "cpt", "sft", "eval_sft", "rl_step", "eval_rl_step"]
_MODELS = ("a_sft_optimal", "b_sft_dag", "c_rl_step", "d_rl_outcome")
STUDY = ["sft_optimal", "rl_outcome"] + [f"study_{m}_free" for m in _MODELS]
AFTER_STUDY = ["skills", "sweep"] + [f"study_{m}_bounded" for m in _MODELS] + ["multiturn", "probe"]


@pytest.fixture
def fake_stages(monkeypatch):
    """Every stage runner replaced by one that records its call; SFT reports a step count."""
    from steiner.demo import stages

    calls: list[str] = []

    def fake(config, d):
        calls.append(d.name)
        (d / "written.txt").write_text(repr(config))  # what a data stage hands on follows its config
        return {"global_step": 7}

    runners = [n for n in dir(stages) if n.startswith("run_")]
    assert len(runners) == 10
    for n in runners:
        monkeypatch.setattr(stages, n, fake)
    return calls


def _run(cfg, calls):
    from steiner.demo import run_stages

    calls.clear()
    pipe = Pipeline(Path(cfg.out))
    run_stages(cfg, pipe)
    return pipe


def _changed(value):
    if isinstance(value, bool):
        return not value
    if value in ("optimal", "search"):  # a choice: the other one
        return "search" if value == "optimal" else "optimal"
    if isinstance(value, list):
        return [*value[:-1], value[-1] + 1]
    if value in ("", "builtin"):  # base_model: one built from a config instead of the shipped base, or back
        return "builtin" if value == "" else ""
    return value * 2 if value else 1  # doubled: hidden_size must stay divisible by the heads


def _downstream(pipe, names):
    """``names`` and every stage that reads (transitively) one of them."""
    out = set(names)
    for rec in pipe.records:
        if out & set(rec.inputs):
            out.add(rec.name)
    return out


def test_every_demo_option_reruns_its_stages_and_those_after_them(tmp_path, fake_stages):
    from steiner.demo import DemoConfig

    base = DemoConfig(out=str(tmp_path / "demo"), study=True)
    first = _run(base, fake_stages)
    assert fake_stages == STAGES_BEFORE_STUDY + STUDY + AFTER_STUDY
    _run(base, fake_stages)
    assert fake_stages == []  # same config: every stage resumes
    # what each stage reads, from the paths in its config
    assert first.record("cpt").inputs == ["base", "synth"]
    assert first.record("sft_optimal").inputs == ["base", "cpt", "synth"]  # base: the drill text it replays
    assert first.record("study_d_rl_outcome_bounded").inputs == ["rl_outcome", "synth"]

    expected = {  # hand-derived: the stages that use the option, and all stages downstream of them
        "sft_max_length": set(STAGES_BEFORE_STUDY[3:] + STUDY + AFTER_STUDY),
        "rl_learning_rate": {"rl_step", "eval_rl_step", "sweep", "multiturn", "probe", "rl_outcome",
                             "study_c_rl_step_free", "study_c_rl_step_bounded", "study_d_rl_outcome_free",
                             "study_d_rl_outcome_bounded", "skills"},
        "probe_requests": {"probe"},
        "bounded_max_steps": {"probe"} | {s for s in AFTER_STUDY if s.endswith("_bounded")},
        "cpt_docs": set(STAGES_BEFORE_STUDY[1:] + STUDY + AFTER_STUDY),
        "drill_state_share": set(STAGES_BEFORE_STUDY[1:] + STUDY + AFTER_STUDY),
        "seed": set(STAGES_BEFORE_STUDY + STUDY + AFTER_STUDY),
    }
    expected["rl_max_steps"] = expected["rl_learning_rate"]
    # out names the folder, quick is a preset of the other fields, study only adds stages
    not_stage_options = {"out", "quick", "study"}
    for f in dataclasses.fields(DemoConfig):
        if f.name in not_stage_options:
            continue
        changed = dataclasses.replace(base, **{f.name: _changed(getattr(base, f.name))})
        pipe = _run(changed, fake_stages)
        reran = set(fake_stages)
        assert reran, f"changing {f.name} reran no stage"
        assert reran == _downstream(pipe, reran), f"{f.name}: a stage after a rerun one was reused"
        if f.name in expected:
            assert reran == expected[f.name], f.name
        _run(base, fake_stages)  # back to the original (its markers were replaced, so this reruns them)
        assert set(fake_stages) == reran, f.name


def test_the_default_run_is_the_recipe_without_the_study(tmp_path, fake_stages):
    """Without --study the demo trains and evaluates (b) and (c), measures their skills and serves (c);
    the comparisons, the sweep and multi-turn (hours on 2 cores) are left out."""
    from steiner.demo import DemoConfig

    _run(DemoConfig(out=str(tmp_path / "demo")), fake_stages)
    assert fake_stages == STAGES_BEFORE_STUDY + ["skills", "probe"]


def test_the_sft_key_is_the_full_sft_config(tmp_path, fake_stages):
    from steiner.demo import DemoConfig

    pipe = _run(DemoConfig(out=str(tmp_path / "demo"), sft_max_length=333, study=True), fake_stages)
    sft = pipe.record("sft").config
    assert sft["max_length"] == 333 and sft["model"] == "<out>/cpt" and sft["paths_files"] == [
        "<out>/synth/paths_dag.jsonl"]
    assert sft["num_epochs"] == DemoConfig().sft_epochs and "learning_rate" in sft and "lora" in sft  # library fields too
    # (a) is trained for as many steps as (b) took
    assert pipe.record("sft_optimal").config["max_steps"] == 7


def test_the_end_to_end_test_sizes_build_valid_stage_configs(tmp_path, fake_stages, monkeypatch):
    """Every stage config the small sizes of tests/test_demo.py build passes its own checks."""
    import argparse

    from steiner.config import add_arguments, config_from_args
    from steiner.demo import DemoConfig

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    from test_demo import TINY

    ap = argparse.ArgumentParser()
    add_arguments(ap, DemoConfig)
    cfg = config_from_args(DemoConfig, ap.parse_args(["--out", str(tmp_path / "demo"), *TINY]))
    pipe = _run(cfg, fake_stages)
    assert fake_stages == STAGES_BEFORE_STUDY + STUDY + AFTER_STUDY
    rl = pipe.record("rl_step").config  # 2 questions x 2 completions: minibatches of 4
    assert rl["per_device_batch_size"] == 4 and rl["questions_per_step"] * rl["num_generations"] == 4


def test_split_paths_takes_the_earlier_turn_from_the_pool_asked_for(tmp_path):
    from steiner.demo.stages import split_paths
    from steiner.jsonl import read_jsonl, write_jsonl

    def rec(qid, source, name):
        return {"question_id": qid, "question": f"q{qid}", "source": source, "final_answer": "1",
                "steps": [{"name": name, "decision": "end", "returns_to": None}]}

    write_jsonl(tmp_path / "paths.jsonl", [rec(i, "dag", f"search{i}") for i in range(20)]
                + [rec(i, "optimal", f"opt{i}") for i in range(20)])
    for history, prefix in (("optimal", "opt"), ("search", "search")):
        split_paths(tmp_path, seed=0, multiturn_fraction=1.0, history=history)
        dag = list(read_jsonl(tmp_path / "paths_dag.jsonl", "x"))
        earlier = [r["history"][0]["steps"][0]["name"] for r in dag if "history" in r]
        assert len(earlier) >= 15 and all(n.startswith(prefix) for n in earlier), (history, earlier)
        assert all("history" not in r["history"][0] for r in dag if "history" in r)
        opt = list(read_jsonl(tmp_path / "paths_optimal.jsonl", "x"))
        assert all(r["history"][0]["steps"][0]["name"].startswith("opt") for r in opt if "history" in r)
    with pytest.raises(ValueError, match="'optimal' or 'search'"):
        split_paths(tmp_path, seed=0, history="mixed")


def test_split_paths_writes_a_share_of_the_searches_for_a_stated_budget(tmp_path):
    from steiner.countdown.steps import search_path
    from steiner.demo.stages import split_paths
    from steiner.format import step_to_dict
    from steiner.jsonl import read_jsonl, write_jsonl

    problems = [{"id": f"p{i}", "numbers": [4, 8, 7], "target": 39, "question": "q"} for i in range(40)]
    plain, answer = search_path([4, 8, 7], 39)
    write_jsonl(tmp_path / "problems.jsonl", problems)
    write_jsonl(tmp_path / "paths.jsonl", [{"id": f"p{i}-dag-0", "question_id": f"p{i}", "question": "q",
                                            "source": "dag", "final_answer": answer,
                                            "steps": [step_to_dict(s) for s in plain]} for i in range(40)])
    split_paths(tmp_path, seed=0, multiturn_fraction=0.0)
    before = (tmp_path / "paths_dag.jsonl").read_text()
    split_paths(tmp_path, seed=0, multiturn_fraction=0.0, budget_fraction=0.0, budget_steps=[4, 4])
    assert (tmp_path / "paths_dag.jsonl").read_text() == before  # no budget: the same file
    split_paths(tmp_path, seed=0, multiturn_fraction=0.0, budget_fraction=0.5, budget_steps=[4, 5])
    recs = list(read_jsonl(tmp_path / "paths_dag.jsonl", "x"))
    budgeted = [r for r in recs if r["source"] == "budget"]
    assert len(recs) == 40 and 10 <= len(budgeted) <= 30
    for r in budgeted:
        k = int(r["id"].rsplit("-min", 1)[1])
        assert k in (4, 5) and r["system"] == f"Take at least {k} steps." and r["final_answer"] == answer
        # the hit (step 3) is passed until the budget: one more move, then back to it
        assert len(r["steps"]) == 5 and [s["decision"] for s in r["steps"]].count("end") == 1
    assert {len(r["steps"]) for r in recs if r["source"] == "dag"} == {3} and not any("system" in r for r in recs
                                                                                       if r["source"] == "dag")
    # recheck passes: the hit's move is written again until the budget, K steps in all
    split_paths(tmp_path, seed=0, multiturn_fraction=0.0, budget_fraction=0.5, budget_steps=[4, 5],
                budget_pass="recheck")
    again = [r for r in read_jsonl(tmp_path / "paths_dag.jsonl", "x") if r["source"] == "budget"]
    assert [r["id"] for r in again] == [r["id"] for r in budgeted]
    for r in again:
        k = int(r["id"].rsplit("-min", 1)[1])
        assert len(r["steps"]) == k and {s["name"] for s in r["steps"][2:]} == {plain[2].name}


def test_a_data_stage_reruns_in_an_empty_folder(tmp_path, monkeypatch):
    # a writer that resumes (as the synthesis resumes its step records) must not keep what older code
    # wrote, nor report it as skipped: after a code change the data are written anew, and data written
    # anew the same way hand on the same digest, so the readers resume
    src = _code_module(tmp_path, monkeypatch, "resumable_mod")
    root = tmp_path / "run"
    calls: list[str] = []

    def write(config, d):
        calls.append(d.name)
        rec = d / "records.txt"
        old = rec.read_text() if rec.exists() else ""
        rec.write_text(old or f"written by code {src.read_text().split('#')[0].strip()}")
        (d / "stats.txt").write_text("skipped" if old else "written")

    def stages():
        p = Pipeline(root)
        p.run("synth", {}, write, code=["resumable_mod"])
        p.run("train", {"data": str(root / "synth" / "records.txt")}, write)
        return p

    first = stages().record("synth").output
    src.write_text("VALUE = 1  # a comment\n")
    p = stages()
    assert calls == ["synth", "train", "synth"]  # same data written anew: train resumes
    assert p.record("synth").output == first
    assert (root / "synth" / "stats.txt").read_text() == "written"
    src.write_text("VALUE = 2\n")
    stages()
    assert (root / "synth" / "records.txt").read_text() == "written by code VALUE = 2"
    assert calls[-2:] == ["synth", "train"]
