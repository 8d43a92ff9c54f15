"""RL on TRL's GRPOTrainer with a tiny model and a hand-written 2-question DAG file: the direction of an
update in both modes, masks, temperature, clipping, LoRA, resume, several processes, config and data errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from steiner.config import ConfigError
from steiner.train.rl import RLConfig, load_items


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


def _cfg(model_dir, out, rl_data, **kw) -> RLConfig:
    dags, questions = rl_data
    base = dict(model=str(model_dir), output_dir=str(out), dags=str(dags), questions=str(questions),
                num_generations=4, questions_per_step=1, max_new_tokens=40, max_reasoning_tokens=32, max_steps=1,
                per_device_batch_size=4, learning_rate=1e-3, save_steps=100, use_cpu=True, seed=0, resume=False,
                kl_coef=0.0, match="embedding", similarity_threshold=-1.0)
    return RLConfig(**{**base, **kw})


def _capturing(bonus: tuple[float, ...] = (0.0,)):
    """A SteinerGRPOTrainer that adds ``bonus[i % len(bonus)]`` to row i's outcome reward (so a group's
    rewards differ by design) and keeps each generated batch with its log-probs before any update."""
    from steiner.train.grpo import SteinerGRPOTrainer

    class Capture(SteinerGRPOTrainer):
        def __init__(self, *a, **k):
            self.batches = []
            super().__init__(*a, **k)

        def steiner_reward(self, *a, **k):
            r = super().steiner_reward(*a, **k)
            for i, (pr, _, _) in enumerate(self._scored):
                pr.outcome += bonus[i % len(bonus)]
            return [x + bonus[i % len(bonus)] for i, x in enumerate(r)]

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            self.batches.append((out, _logps(self, out)))
            return out

    return Capture


def _logps(trainer, out) -> torch.Tensor:
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    att = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    with torch.no_grad():
        lp, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, att, out["completion_ids"].shape[1])
    return lp


@pytest.mark.parametrize("mode", ["outcome", "step"])
def test_one_update_raises_positive_and_lowers_negative_completions(tiny_model_dir, rl_data, tmp_path, mode):
    from steiner.tokenizer import ReasoningTokenIds
    from steiner.train.rl import build_trainer

    trainer, tok, _ = build_trainer(_cfg(tiny_model_dir, tmp_path / mode, rl_data, mode=mode),
                                    _capturing((2.0, 0.0)))
    trainer.train()
    assert trainer.state.global_step == 1 and len(trainer.batches) == 1
    out, before = trainer.batches[0]
    after = _logps(trainer, out)
    mask = (out["completion_mask"] * out["tool_mask"]).float()
    adv = out["advantages"] if out["advantages"].dim() == 2 else out["advantages"][:, None].expand_as(mask)
    assert adv.shape == mask.shape
    mean_adv = (adv * mask).sum(1) / mask.sum(1)
    change = ((after - before) * mask).sum(1) / mask.sum(1)
    assert (mean_adv > 0.1).any() and (mean_adv < -0.1).any()
    for a, d in zip(mean_adv.tolist(), change.tolist(), strict=True):
        if abs(a) > 0.1:
            assert (d > 0) == (a > 0), (mean_adv.tolist(), change.tolist())
    # only sampled tokens carry gradient: the grammar's forced tokens are out of the loss, text is in
    t = ReasoningTokenIds.from_tokenizer(tok)
    forced = torch.tensor([t.reasoning_start, t.step_start, t.name_start, t.thought_start, t.summary_start,
                           t.reflection_start])
    comp, cm, tm = out["completion_ids"], out["completion_mask"].bool(), out["tool_mask"]
    assert (comp[:, 0] == t.reasoning_start).all() and (tm[:, 0] == 0).all()
    assert (tm[torch.isin(comp, forced) & cm] == 0).all()
    text = ~torch.isin(comp, torch.tensor([*t.all(), tok.eos_token_id])) & cm
    assert text.any() and (tm[text] == 1).all()
    # what sampling recorded is what a replay of the processor on the sampled ids finds (the vLLM path)
    from steiner.train.grpo import forced_mask

    replay = forced_mask(trainer.processors(out["prompt_ids"].shape[1]), out["prompt_ids"], comp)
    assert torch.equal((1 - tm)[cm], replay[cm])


def test_forced_mask_by_hand(tiny_tokenizer):
    """The grammar forces every opener and closer that has no alternative; decisions with a choice and
    text are sampled; a max_steps bound forces the end decision."""
    from steiner.format import ReasoningPath, Step, render
    from steiner.infer.format_processor import FormatLogitsProcessor
    from steiner.tokenizer import ReasoningTokenIds
    from steiner.train.grpo import forced_mask

    t = ReasoningTokenIds.from_tokenizer(tiny_tokenizer)
    path = ReasoningPath([Step("a", "b", "c", "d"), Step("e", "f", "g", "h", decision="end")], answer="24")
    ids = tiny_tokenizer(render(path), add_special_tokens=False)["input_ids"]
    prompt = torch.tensor([[5, 6, 7]])
    forced_ids = {t.reasoning_start, t.step_start, t.name_start, t.thought_start, t.summary_start,
                  t.reflection_start, t.step_end}
    expected = [int(i in forced_ids) for i in ids]
    m = forced_mask([FormatLogitsProcessor(tiny_tokenizer, prompt_lengths=3)], prompt, torch.tensor([ids]))
    assert m[0].tolist() == expected
    assert m[0, ids.index(t.proceed)] == 0 and m[0, ids.index(t.reasoning_end)] == 0
    bounded = forced_mask([FormatLogitsProcessor(tiny_tokenizer, 0, 2, prompt_lengths=3)], prompt, torch.tensor([ids]))
    assert bounded[0, ids.index(t.reasoning_end)] == 1 and bounded[0, ids.index(t.proceed)] == 0


def test_vllm_requests_opt_in_to_the_processors():
    """Not run with vLLM here (no GPU vLLM): what the trainer hands TRL for vLLM sampling."""
    from steiner.train.grpo import vllm_generation_kwargs

    opts = {"format_strict": True, "min_steps": 1, "max_steps": None, "max_reasoning_tokens": 448}
    assert vllm_generation_kwargs({"seed": 3}, "colocate", opts) == {
        "seed": 3, "extra_args": {"format_strict": 1, "min_steps": 1, "max_reasoning_tokens": 448}}
    assert vllm_generation_kwargs(None, "server", opts)["vllm_xargs"]["min_steps"] == 1


def test_logprobs_at_the_sampling_temperature_and_identical_group(tiny_model_dir, rl_data, tmp_path):
    from steiner.train.rl import build_trainer

    trainer, _, _ = build_trainer(_cfg(tiny_model_dir, tmp_path / "t", rl_data, mode="outcome", temperature=0.5))
    # an untrained model is never correct and always well-formed: equal rewards, advantages exactly 0
    trainer.model.train()
    out = trainer._generate_and_score_completions([trainer.train_dataset[0]] * 4)
    assert len({p.outcome for p, _, _ in trainer._scored}) == 1
    assert out["advantages"].tolist() == [0.0] * 4
    ids = torch.tensor([[3, 17, 42, 99, 7, 250, 12]])
    att = torch.ones_like(ids)
    with torch.no_grad():
        got, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, att, 4)
        logits = trainer.model(input_ids=ids, attention_mask=att).logits[:, -5:-1].float()

    def lp(temp):
        return torch.log_softmax(logits / temp, -1).gather(-1, ids[:, -4:, None]).squeeze(-1)

    torch.testing.assert_close(got, lp(0.5), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, lp(1.0), atol=1e-2)


def test_ppo_epochs_reuse_samples_with_clipping_active(tiny_model_dir, rl_data, tmp_path):
    """ppo_epochs 2 (TRL num_iterations): the second pass over the same samples runs off-policy against
    the stored old log-probs, and a tiny clip_eps clips part of it."""
    from steiner.train.rl import build_trainer

    cfg = _cfg(tiny_model_dir, tmp_path / "ppo", rl_data, mode="outcome", ppo_epochs=2, clip_eps=0.01,
               learning_rate=2e-2, logging_steps=1)
    trainer, _, _ = build_trainer(cfg, _capturing((1.0, 0.0)))
    trainer.train()
    assert trainer.state.global_step == 2 and len(trainer.batches) == 1  # two updates, one round of sampling
    out, before = trainer.batches[0]
    torch.testing.assert_close(out["old_per_token_logps"], before)
    (m,) = [json.loads(x) for x in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert m["step"] == 1 and m["clip_ratio/region_mean"] > 0


def test_lora_trains_adapters_only_and_saves_merged(tiny_model_dir, rl_data, tmp_path):
    from transformers import AutoModelForCausalLM

    from steiner.train.common import finish, run_trainer
    from steiner.train.rl import build_trainer

    out = tmp_path / "lora"
    cfg = _cfg(tiny_model_dir, out, rl_data, mode="outcome", lora=True, lora_r=4, lora_alpha=8, kl_coef=0.1,
               learning_rate=1e-2)
    trainer, tok, _ = build_trainer(cfg, _capturing((1.0, 0.0)))
    assert trainer.ref_model is None  # the reference is the policy with its adapters off: no second copy
    finish(trainer, tok, cfg, run_trainer(trainer, cfg), "rl")
    assert (out / "config.json").exists() and not (out / "adapter_config.json").exists()  # LoRA merged
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    assert torch.equal(before["lm_head.weight"], after["lm_head.weight"])
    assert not torch.equal(before["model.layers.0.self_attn.q_proj.weight"],
                           after["model.layers.0.self_attn.q_proj.weight"])


@pytest.mark.slow
def test_step_mode_end_to_end_and_resume(tiny_model_dir, rl_data, tmp_path):
    from steiner.tokenizer import load_tokenizer
    from steiner.train.common import run_trainer
    from steiner.train.rl import build_trainer, main

    out = tmp_path / "rl"
    cfg = _cfg(tiny_model_dir, out, rl_data, max_steps=2, save_steps=1, resume=True, kl_coef=0.04)
    assert main(cfg) == out
    for f in ("config.json", "model.safetensors", "tokenizer.json", "steiner_train.json"):
        assert (out / f).exists(), f
    assert "reasoning_step_start" in load_tokenizer(out).chat_template
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2] and all(m["matched"] == 1.0 for m in lines)
    assert (out / "checkpoint-1").is_dir() and (out / "checkpoint-2").is_dir()
    # a longer run resumes at step 2: one more round of sampling and one update, not three
    trainer, _, _ = build_trainer(_cfg(tiny_model_dir, out, rl_data, max_steps=3, save_steps=1, resume=True,
                                       kl_coef=0.04), _capturing())
    summary = run_trainer(trainer, trainer.steiner)
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["global_step"] == 3
    assert len(trainer.batches) == 1
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


@pytest.mark.slow
def test_rl_two_processes_end_with_equal_weights(tiny_model_dir, rl_data, tmp_path):
    """accelerate launch --multi_gpu --num_processes 2 (gloo on CPU): gradients are all-reduced, so both
    ranks end with the same weights; each rank sampled its own share of the questions."""
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
           "--questions-per-step", "1", "--per-device-batch-size", "2", "--max-new-tokens", "32",
           "--max-reasoning-tokens", "24", "--match", "embedding", "--similarity-threshold", "-1",
           "--learning-rate", "0.01", "--write-rank-checksums", "true", "--use-cpu", "true", "--save-steps", "100",
           "--trl", "{log_completions: false}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank_{i}.json").read_text()) for i in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["global_step"] for r in ranks] == [2, 2]
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    from transformers import AutoModelForCausalLM

    from steiner.train.common import weights_checksum

    assert ranks[0]["checksum"] != weights_checksum(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


# ---- config and data --------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [("num_generations", 1), ("clip_eps", 0.0), ("kl_coef", -0.1),
                                         ("ppo_epochs", 0), ("temperature", 0.0), ("max_new_tokens", 0),
                                         ("adv_std_floor", -1.0), ("step_credit", "sum")])
def test_config_out_of_range_names_the_field(field, value, tmp_path):
    with pytest.raises(ConfigError, match=field):
        RLConfig(model="m", dags=str(tmp_path / "d.jsonl"), **{field: value})


def test_trl_options_from_yaml_and_flags(tmp_path):
    from steiner.config import add_arguments, config_from_args, load_config

    d = str(tmp_path / "d.jsonl")
    cfg = RLConfig(model="m", dags=d, trl="loss_type=dr_grpo,mask_truncated_completions=true,epsilon_high=0.28")
    assert cfg.trl == {"loss_type": "dr_grpo", "mask_truncated_completions": True, "epsilon_high": 0.28}
    assert RLConfig(model="m", dags=d, trl="{scale_rewards: none}").trl == {"scale_rewards": "none"}
    y = tmp_path / "rl.yaml"
    y.write_text(f"model: m\ndags: {d}\nkl_coef: 0.1\ntrl:\n  loss_type: grpo\n  top_k: 5\n")
    args = __import__("argparse").ArgumentParser()
    add_arguments(args, RLConfig)
    cfg = config_from_args(RLConfig, args.parse_args(["--config", str(y), "--clip-eps", "0.3"]))
    g = cfg.grpo_config()
    assert (g.loss_type, g.top_k, g.beta, g.epsilon) == ("grpo", 5, 0.1, 0.3)
    # one name per option: TRL names that our fields set are refused, unknown ones too
    with pytest.raises(ConfigError, match="'beta' is set by 'kl_coef'"):
        RLConfig(model="m", dags=d, trl={"beta": 0.1})
    with pytest.raises(ConfigError, match=r"unknown GRPOConfig option.*'loss_typo'"):
        load_config(RLConfig, overrides={"model": "m", "dags": d, "trl": {"loss_typo": "x"}}).grpo_config()
    with pytest.raises(ConfigError, match="key=value"):
        RLConfig(model="m", dags=d, trl="loss_type")


def test_rl_step_maps_to_trl_updates(tmp_path):
    """One RL step = questions_per_step x G completions per process in minibatches of
    per_device_batch_size, ppo_epochs passes; max_steps and save_steps count RL steps."""
    cfg = RLConfig(model="m", dags=str(tmp_path / "d"), num_generations=8, questions_per_step=4,
                   per_device_batch_size=8, ppo_epochs=2, gradient_accumulation_steps=2, max_steps=10, save_steps=5,
                   use_cpu=True)
    assert cfg.updates_per_step == 4 * 8 // 8 * 2 // 2
    g = cfg.grpo_config()
    assert (g.steps_per_generation, g.num_iterations, g.max_steps, g.save_steps) == (4, 2, 40, 20)
    assert g.generation_batch_size == 32
    # on a CPU the completions are sampled with a preallocated KV cache; a trl option still wins
    assert g.cache_implementation == "static"
    assert RLConfig(model="m", dags="d", use_cpu=True, trl={"cache_implementation": None}
                    ).grpo_config().cache_implementation is None
    with pytest.raises(ConfigError, match="per_device_batch_size.*must divide"):
        RLConfig(model="m", dags="d", num_generations=4, questions_per_step=1, per_device_batch_size=3)


def test_bad_data_errors_and_counted_skips(rl_data, tmp_path):
    dags, questions = rl_data
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
        load_items(RLConfig(model="m", questions=str(other), dags=str(dags)))
    # a question without a DAG and a DAG without a question are skipped and counted
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps({"id": i, "question": "?", "answer": "1"}) + "\n" for i in ("q1", "zz", "yy")))
    items, skipped = load_items(RLConfig(model="m", questions=str(mixed), dags=str(dags)))
    assert [it.id for it in items] == ["q1"] and skipped == {"no_dag": 2, "unmatched_dags": 1}
    items, skipped = load_items(RLConfig(model="m", mode="outcome", questions=str(mixed), dags=str(dags)))
    assert [it.id for it in items] == ["q1", "zz", "yy"] and skipped == {"no_dag": 0, "unmatched_dags": 1}
    from steiner.train.rl import build_trainer

    with pytest.raises(ValueError, match=r"1 questions, but one RL step samples questions_per_step \(2\)"):
        build_trainer(RLConfig(model="m", questions=str(mixed), dags=str(dags), questions_per_step=2,
                               num_generations=2, per_device_batch_size=4, use_cpu=True))


def test_example_configs_load():
    from pathlib import Path

    from steiner.config import load_config

    root = Path(__file__).resolve().parents[1] / "configs"
    for name in ("rl.yaml", "rl_lora_7b.yaml", "rl_full_7b_zero3.yaml"):
        cfg = load_config(RLConfig, root / name)
        assert cfg.mode == "step" and cfg.num_generations == 8
    assert load_config(RLConfig, root / "rl_lora_7b.yaml").trl["vllm_mode"] == "colocate"
    assert load_config(RLConfig, root / "rl_full_7b_zero3.yaml").trl["vllm_mode"] == "server"


@pytest.mark.slow
def test_rl_on_synthesised_countdown(tiny_model_dir, tmp_path):
    """The real pipeline: `steiner synth` (built-in Countdown teacher) writes dags.jsonl and paths.jsonl;
    exact-key matching puts every sampled path step on the node synthesis recorded for it; RL runs a step
    on the Countdown questions with the Countdown checker and step key."""
    from steiner.commands.synth import SynthConfig
    from steiner.commands.synth import main as synth
    from steiner.format import step_from_dict
    from steiner.train.rewards import StepMatcher, StepRewardConfig, domain_key_fn, load_dags
    from steiner.train.rl import main

    data = tmp_path / "synth"
    synth(SynthConfig(out=str(data), problems=3, test_problems=0, seed=3, progress=False))
    dags = load_dags(data / "dags.jsonl")
    problems = {r["id"]: r for r in map(json.loads, (data / "problems.jsonl").read_text().splitlines())}
    matcher = StepMatcher(StepRewardConfig())
    for rec in map(json.loads, (data / "paths.jsonl").read_text().splitlines()):
        steps = [step_from_dict(s) for s in rec["steps"]]
        matches = matcher.match(steps, dags[rec["question_id"]], key_fn=domain_key_fn(problems[rec["question_id"]]))
        assert matches == [s.meta["node"] for s in steps]
    out = tmp_path / "rl"
    main(RLConfig(model=str(tiny_model_dir), output_dir=str(out), dags=str(data / "dags.jsonl"),
                  questions=str(data / "problems.jsonl"), num_generations=4, questions_per_step=1, max_new_tokens=40,
                  max_reasoning_tokens=32, max_steps=1, per_device_batch_size=4, use_cpu=True, resume=False))
    (m,) = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(m["loss"]) and m["format_valid"] == 1.0
