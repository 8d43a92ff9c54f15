"""`steiner demo` end to end at a tiny size (every stage, the report, the terminal), and its resume."""

from __future__ import annotations

import json

import pytest

TINY = ["--problems", "60", "--test-problems", "6", "--cpt-docs", "40", "--sft-epochs", "1", "--rl-steps", "1",
        "--rl-group", "2", "--rl-questions", "2", "--eval-n", "2", "--max-new-tokens", "96", "--probe-requests", "4",
        "--hidden-size", "32", "--num-layers", "1", "--vocab-size", "300", "--sweep-max-steps", "1,2", "--study",
        "--compile", "false", "--base-model", ""]  # a model built from a config: tiny, fast


@pytest.mark.slow  # every stage, trained and served: minutes on 2 cores
def test_demo_runs_every_stage_writes_the_report_and_resumes(tmp_path, capfd):
    from steiner.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *TINY]) == 0
    # the terminal holds stage rules, rich bars and the summary; the libraries' own output went to demo.log
    term = "".join(capfd.readouterr())
    for noise in ("Loading weights", "Writing model shards", "{'loss'", "it/s]", "Warning"):
        assert noise not in term, noise
    assert "synth" in term and "steiner demo:" in term
    summary = json.loads((out / "summary.json").read_text())
    names = [s["name"] for s in summary["stages"]]
    for stage in ("synth", "base", "cpt", "sft", "eval_sft", "rl_step", "eval_rl_step", "sweep", "multiturn",
                  "probe", "sft_optimal", "rl_outcome", "study_a_sft_optimal_free", "study_d_rl_outcome_bounded",
                  "skills"):
        assert stage in names
    assert not any(s["skipped"] for s in summary["stages"])
    eval_sft = next(s for s in summary["stages"] if s["name"] == "eval_sft")["result"]
    assert eval_sft["num_questions"] == 6 and 0.0 <= eval_sft["pass@1"] <= 1.0
    # the held-out problems' targets never appear in training
    train = {json.loads(line)["target"] for line in (out / "synth" / "problems.jsonl").read_text().splitlines()}
    test = {json.loads(line)["target"] for line in (out / "synth" / "test_problems.jsonl").read_text().splitlines()}
    assert train and test and not train & test
    # the two SFT runs of the study saw the same number of optimizer steps (equal packed tokens)
    steps = {s["name"]: s["result"].get("global_step") for s in summary["stages"]}
    assert steps["sft"] == steps["sft_optimal"]
    report = (out / "report.md").read_text()
    skills = next(s for s in summary["stages"] if s["name"] == "skills")["result"]["rows"]
    assert [(r["model"], r["targets"]) for r in skills] == [
        (m, t) for m in ("a_sft_optimal", "b_sft_dag", "c_rl_step", "d_rl_outcome") for t in ("held-out", "training")]
    for heading in ("## Evaluation on held-out targets", "## Step sweep", "## Multi-turn", "## Study", "## Skills",
                    "## Serving and the latency probe", "## Configuration, seeds and versions"):
        assert heading in report
    assert (out / "report.html").read_text().count("<img") >= 3
    assert (out / "probe" / "probe.png").is_file()
    assert "hardware" in summary and summary["hardware"]["cpu_count"]

    assert main(["demo", "--out", str(out), *TINY]) == 0  # a rerun resumes: nothing is recomputed
    again = json.loads((out / "summary.json").read_text())
    assert all(s["skipped"] for s in again["stages"])
