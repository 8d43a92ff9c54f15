"""RL end to end on a tiny model and a hand-written 2-question DAG file; config and data errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from steiner.config import ConfigError
from steiner.train.rl import RLConfig, load_items, main, policy_loss


def _dag(qid: str, question: str, answer: str, texts: dict[str, str]) -> dict:
    spec = [("question", 0, 3, 0, 2), ("A", 1, 2, 1, 1), ("B", 2, 1, 1, 1), ("X", 1, None, 1, 0),
            ("answer", 3, 0, 1, 0)]
    nodes = [{"id": i, "key": None, "summary": texts.get(i, ""), "texts": [texts[i]] if i in texts else [],
              "is_answer": i == "answer", "dead_end": d_e is None, "e_in": ei, "e_out": eo, "d_s": ds, "d_e": d_e}
             for i, ds, d_e, ei, eo in spec]
    return {"question_id": qid, "question": question, "answer": answer, "source": "question", "sink": "answer",
            "nodes": nodes, "edges": [["question", "A"], ["question", "X"], ["A", "B"], ["B", "answer"]]}


@pytest.fixture
def rl_data(tmp_path):
    dags = tmp_path / "dags.jsonl"
    recs = [
        _dag("q1", "What is 3 + 5 + 8?", "16", {"A": "3 + 5 = 8, remaining 8 and 8", "B": "8 + 8 = 16",
                                                  "X": "3 * 5 = 15, remaining 15 and 8"}),
        _dag("q2", "What is 4 * 6?", "24", {"A": "4 * 3 = 12", "B": "12 * 2 = 24", "X": "4 + 6 = 10"}),
    ]
    dags.write_text("".join(json.dumps(r) + "\n" for r in recs))
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"id": r["question_id"], "question": r["question"],
                                             "answer": r["answer"]}) + "\n" for r in recs))
    return dags, questions


def _cfg(model_dir, out, **kw) -> RLConfig:
    base = dict(model=str(model_dir), output_dir=str(out), num_generations=4, questions_per_step=1,
                max_new_tokens=40, max_reasoning_tokens=32, max_steps=2, per_device_batch_size=4,
                learning_rate=1e-2, save_steps=1, use_cpu=True, seed=0)
    return RLConfig(**{**base, **kw})


def _params(path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return {k: v.detach().clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


def test_rl_step_mode_end_to_end_and_resume(tiny_model_dir, rl_data, tmp_path):
    dags, _ = rl_data
    out = tmp_path / "rl"
    # threshold -1: every step of the untrained model's random text matches its nearest node, so step
    # rewards differ within a group and the update has a signal to follow
    cfg = _cfg(tiny_model_dir, out, dags=str(dags), match="embedding", similarity_threshold=-1.0)
    assert main(cfg) == out
    for f in ("config.json", "model.safetensors", "tokenizer.json", "steiner_train.json"):
        assert (out / f).exists(), f
    from steiner.tokenizer import load_tokenizer

    assert "reasoning_step_start" in load_tokenizer(out).chat_template
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2]
    for m in lines:
        assert math.isfinite(m["loss"]) and m["kl"] >= 0 and 0 <= m["accuracy"] <= 1
        assert m["matched"] == 1.0 and m["mean_steps"] >= 1
    before, after = _params(tiny_model_dir), _params(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert (out / "checkpoint-1" / "trainer_state.json").exists() and (out / "checkpoint-2").exists()
    # resume: a longer run continues from the last checkpoint (step 2) instead of starting over
    main(_cfg(tiny_model_dir, out, dags=str(dags), match="embedding", similarity_threshold=-1.0, max_steps=3))
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert json.loads((out / "steiner_train.json").read_text())["resumed_from"].endswith("checkpoint-2")


def test_rl_outcome_mode_with_lora(tiny_model_dir, rl_data, tmp_path):
    _, questions = rl_data
    out = tmp_path / "rl_outcome"
    cfg = _cfg(tiny_model_dir, out, mode="outcome", questions=str(questions), lora=True, lora_r=4,
               lora_alpha=8, max_steps=1, kl_coef=0.1)
    main(cfg)
    (m,) = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(m["loss"]) and m["completion_tokens"] > 0
    assert (out / "config.json").exists() and not (out / "adapter_config.json").exists()  # LoRA merged


def test_policy_loss_hand_computed():
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.5]]))
    old = torch.log(torch.tensor([[0.25, 0.5, 0.5]]))  # ratio 2 on token 0 is clipped to 1.2
    per_seq, kl, clipped = policy_loss(logp, old, None, adv, mask, clip_eps=0.2, kl_coef=0.1)
    assert per_seq.tolist() == pytest.approx([(-1.2 + 1.0) / 2])
    assert float(clipped) == pytest.approx(0.5) and kl.tolist() == [0.0]
    ref = torch.log(torch.tensor([[0.25, 0.5, 0.5]]))  # k3 = r - log r - 1 with r = ref/p = 0.5
    _, kl, _ = policy_loss(logp, logp, ref, torch.zeros(1, 3), mask, clip_eps=0.2, kl_coef=0.1)
    assert kl.tolist() == pytest.approx([(0.5 - math.log(0.5) - 1) / 2])


@pytest.mark.parametrize("field,value", [("num_generations", 1), ("clip_eps", 0.0), ("kl_coef", -0.1),
                                         ("ppo_epochs", 0), ("temperature", 0.0), ("max_new_tokens", 0)])
def test_config_out_of_range_names_the_field(field, value, tmp_path):
    with pytest.raises(ConfigError, match=field):
        RLConfig(model="m", dags=str(tmp_path / "d.jsonl"), **{field: value})


def test_step_mode_refuses_data_without_dags(rl_data, tmp_path):
    _, questions = rl_data
    with pytest.raises(ConfigError, match=r"dags.*steiner synth"):
        RLConfig(model="m", questions=str(questions))
    steps = tmp_path / "steps.jsonl"
    steps.write_text(json.dumps({"question_id": "q1", "question": "?", "answer": "1", "kind": "reference",
                                 "steps": []}) + "\n")
    with pytest.raises(ValueError, match=r"steps.jsonl: line 1.*dags.jsonl"):
        load_items(RLConfig(model="m", questions=str(questions), dags=str(steps)))
    with pytest.raises(FileNotFoundError, match="steiner synth"):
        load_items(RLConfig(model="m", dags=str(tmp_path / "nope.jsonl")))
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "zz", "question": "?", "answer": "1"}) + "\n")
    with pytest.raises(ValueError, match="no question.*has a DAG"):
        load_items(RLConfig(model="m", questions=str(other), dags=str(rl_data[0])))


@pytest.mark.slow
def test_rl_two_processes_under_accelerate(tiny_model_dir, rl_data, tmp_path):
    """accelerate launch --multi_gpu --num_processes 2 (gloo on CPU): each rank samples its own
    question, gradients are all-reduced, so both ranks end with the same weights."""
    import os
    import socket
    import subprocess
    import sys

    dags, _ = rl_data
    out = tmp_path / "rl2"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--main_process_port", str(port), "-m", "steiner.cli", "train", "rl", "--model", str(tiny_model_dir),
           "--dags", str(dags), "--output-dir", str(out), "--max-steps", "2", "--num-generations", "2",
           "--questions-per-step", "1", "--max-new-tokens", "32", "--max-reasoning-tokens", "24",
           "--match", "embedding", "--similarity-threshold", "-1", "--learning-rate", "0.01",
           "--write-rank-checksums", "true", "--use-cpu", "true", "--save-steps", "100"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank_{i}.json").read_text()) for i in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    assert ranks[0]["questions"] == ["q1"] and ranks[1]["questions"] == ["q2"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_example_configs_load():
    from pathlib import Path

    from steiner.config import load_config

    root = Path(__file__).resolve().parents[1] / "configs"
    for name in ("rl.yaml", "rl_lora_7b.yaml"):
        cfg = load_config(RLConfig, root / name)
        assert cfg.mode == "step" and cfg.num_generations == 8


@pytest.mark.slow
def test_rl_on_synthesised_countdown(tiny_model_dir, tmp_path):
    """The real pipeline: `steiner synth` (built-in Countdown teacher) writes dags.jsonl and paths.jsonl;
    exact-key matching puts every sampled path step on the node synthesis recorded for it; a path that
    backtracks out of dead ends scores only the mild penalties below the best path;
    RL runs a step on the Countdown questions with the Countdown checker and step key."""
    from steiner.commands.synth import SynthConfig
    from steiner.commands.synth import main as synth
    from steiner.format import ReasoningPath, step_from_dict
    from steiner.train.rewards import (
        StepMatcher,
        StepRewardConfig,
        domain_key_fn,
        load_dags,
        make_checker,
        score,
    )

    data = tmp_path / "synth"
    synth(SynthConfig(out=str(data), problems=3, test_problems=0, seed=3, progress=False))
    dags = load_dags(data / "dags.jsonl")
    problems = {r["id"]: r for r in map(json.loads, (data / "problems.jsonl").read_text().splitlines())}
    cfg = StepRewardConfig()
    matcher = StepMatcher(cfg)
    best: dict[str, float] = {}
    scored = []
    for rec in map(json.loads, (data / "paths.jsonl").read_text().splitlines()):
        steps = [step_from_dict(s) for s in rec["steps"]]
        matches = matcher.match(steps, dags[rec["question_id"]], key_fn=domain_key_fn(problems[rec["question_id"]]))
        assert matches == [s.meta["node"] for s in steps]
        r = score(ReasoningPath(steps, rec["final_answer"]), cfg=cfg, dag=dags[rec["question_id"]], matches=matches,
                  correct=make_checker(problems[rec["question_id"]])(rec["final_answer"]))
        assert r.correct and r.format_ok and all(t != "dead_end_blind" for t in r.terms)
        best[rec["question_id"]] = max(best.get(rec["question_id"], -1e9), r.total)
        scored.append((rec, r))
    for rec, r in scored:  # exploring costs only the mild penalties; 0.25 covers hub bonuses of other lines
        mild = r.terms.count("dead_end_backtracked") * abs(cfg.dead_end_backtracked)
        mild += r.terms.count("repeat") * abs(cfg.repeat_reward)
        assert r.total >= best[rec["question_id"]] - mild - 0.25
    out = tmp_path / "rl"
    main(_cfg(tiny_model_dir, out, dags=str(data / "dags.jsonl"), questions=str(data / "problems.jsonl"),
              max_steps=1, save_steps=100))
    (m,) = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(m["loss"])
