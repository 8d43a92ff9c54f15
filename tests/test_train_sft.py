"""SFT: assistant-only labels, packing, a real TRL run, and checkpoint resume."""

from __future__ import annotations

import json

import pytest

from steiner.config import ConfigError
from test_train_common import write_paths


def test_prompt_tokens_are_masked_and_assistant_tokens_are_not(tmp_path, tiny_tokenizer):
    from steiner.train.common import path_messages, read_paths
    from steiner.train.sft import IGNORE_INDEX, tokenize_conversation

    rec, _ = read_paths(str(write_paths(tmp_path / "p.jsonl", n=1)))[0]
    ex = tokenize_conversation(tiny_tokenizer, path_messages(rec))
    ids, labels = ex["input_ids"], ex["labels"]
    assert len(ids) == len(labels)
    prompt = tiny_tokenizer.apply_chat_template(path_messages(rec)[:1], tokenize=True, return_dict=False,
                                                add_generation_prompt=True)
    assert ids[: len(prompt)] == list(prompt)
    assert all(lab == IGNORE_INDEX for lab in labels[: len(prompt)])
    trained = [t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
    assert trained == ids[len(prompt) : len(prompt) + len(trained)]  # one contiguous assistant span
    text = tiny_tokenizer.decode(trained)
    assert text.startswith("<|reasoning_start|>") and text.endswith(rec["final_answer"] + "<|im_end|>")
    assert "<|reasoning_backtrack|>" in text
    full = tokenize_conversation(tiny_tokenizer, path_messages(rec), assistant_only_loss=False)
    assert full["labels"] == ids


def test_a_budgeted_record_states_its_budget_in_an_untrained_system_message(tmp_path, tiny_tokenizer):
    from steiner.format import min_steps_prompt
    from steiner.train.common import path_messages, read_paths
    from steiner.train.sft import IGNORE_INDEX, tokenize_conversation

    rec, _ = read_paths(str(write_paths(tmp_path / "p.jsonl", n=1)))[0]
    plain = tokenize_conversation(tiny_tokenizer, path_messages(rec))
    msgs = path_messages({**rec, "system": min_steps_prompt(4)})
    assert msgs[0] == {"role": "system", "content": "Take at least 4 steps."} and msgs[1:] == path_messages(rec)
    ex = tokenize_conversation(tiny_tokenizer, msgs)
    assert "Take at least 4 steps." in tiny_tokenizer.decode(ex["input_ids"])
    # the system message is prompt: the trained tokens are exactly the plain record's
    assert ([t for t, lab in zip(ex["input_ids"], ex["labels"], strict=True) if lab != IGNORE_INDEX]
            == [t for t, lab in zip(plain["input_ids"], plain["labels"], strict=True) if lab != IGNORE_INDEX])
    with pytest.raises(ValueError, match="positive integer"):
        min_steps_prompt(0)


def test_template_without_generation_markers_is_an_error(tmp_path, tiny_tokenizer):
    import copy

    from steiner.train.common import path_messages, read_paths
    from steiner.train.sft import tokenize_conversation

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}<|im_end|>{% endfor %}"
    rec, _ = read_paths(str(write_paths(tmp_path / "p.jsonl", n=1)))[0]
    with pytest.raises(ValueError, match="generation"):
        tokenize_conversation(tok, path_messages(rec))


def test_config_errors():
    from steiner.train.sft import SteinerSFTConfig

    with pytest.raises(ConfigError, match="paths_files"):
        SteinerSFTConfig()
    with pytest.raises(ConfigError, match="too_long"):
        SteinerSFTConfig(paths_files=["p.jsonl"], too_long="wrap")
    with pytest.raises(ConfigError, match="max_length"):
        SteinerSFTConfig(paths_files=["p.jsonl"], max_length=0)


def test_too_long_conversations_are_dropped_or_truncated(tmp_path, tiny_tokenizer):
    from steiner.train.sft import IGNORE_INDEX, SteinerSFTConfig, build_dataset

    paths = str(write_paths(tmp_path / "p.jsonl", n=4))
    ds, stats = build_dataset(SteinerSFTConfig(paths_files=[paths], max_length=4096), tiny_tokenizer)
    longest = max(map(len, ds["input_ids"]))
    shortest = min(map(len, ds["input_ids"]))
    cut = (longest + shortest) // 2
    ds2, stats2 = build_dataset(SteinerSFTConfig(paths_files=[paths], max_length=cut), tiny_tokenizer)
    assert stats2["dropped_too_long"] > 0 and len(ds2) + stats2["dropped_too_long"] == len(ds)
    ds3, stats3 = build_dataset(SteinerSFTConfig(paths_files=[paths], max_length=cut, too_long="truncate"),
                                tiny_tokenizer)
    assert len(ds3) == len(ds) and max(map(len, ds3["input_ids"])) == cut
    assert all(any(t != IGNORE_INDEX for t in lab) for lab in ds3["labels"])
    with pytest.raises(ValueError, match="max_length"):
        build_dataset(SteinerSFTConfig(paths_files=[paths], max_length=8), tiny_tokenizer)


def test_replayed_text_makes_up_text_ratio_of_the_tokens_with_loss_on_every_token(tmp_path, tiny_tokenizer):
    from steiner.train.sft import SteinerSFTConfig, build_dataset

    paths = str(write_paths(tmp_path / "p.jsonl", n=4))
    text = tmp_path / "drill.txt"
    text.write_text("\n\n".join(f"make {t}. 3*4=12 ({t}? no) 6+6=12 ({t}? no)" for t in range(10, 510)) + "\n")
    ds0, s0 = build_dataset(SteinerSFTConfig(paths_files=[paths]), tiny_tokenizer)
    assert s0["text_tokens"] == 0 and len(ds0) == s0["conversations"]
    ds, s = build_dataset(SteinerSFTConfig(paths_files=[paths], text_files=[str(text)], text_ratio=0.5),
                          tiny_tokenizer)
    conv_tokens = s0["tokens"]
    # documents are taken until their tokens reach the conversations' (the last one may overshoot)
    doc_len = max(map(len, ds["input_ids"][s["conversations"]:]))
    assert conv_tokens <= s["text_tokens"] < conv_tokens + doc_len
    assert len(ds) == s["conversations"] + s["text_documents"]
    for ids, labels in zip(ds["input_ids"][s["conversations"]:], ds["labels"][s["conversations"]:], strict=True):
        assert labels == ids and ids[-1] == tiny_tokenizer.eos_token_id
        assert tiny_tokenizer.decode(ids).startswith("make ")
    with pytest.raises(ConfigError, match="text_ratio"):
        SteinerSFTConfig(paths_files=[paths], text_ratio=0.5)
    with pytest.raises(ConfigError, match="text_ratio"):
        SteinerSFTConfig(paths_files=[paths], text_files=[str(text)], text_ratio=1.0)


def _cfg(tmp_path, tiny_model_dir, **kw):
    from steiner.train.sft import SteinerSFTConfig

    paths = write_paths(tmp_path / "paths.jsonl", n=16)
    base = dict(model=str(tiny_model_dir), output_dir=str(tmp_path / "out"), paths_files=[str(paths)],
                max_length=256, per_device_batch_size=2, logging_steps=1, learning_rate=5e-3)
    return SteinerSFTConfig(**{**base, **kw})


@pytest.mark.parametrize("packing", [True, False])
def test_sft_runs_and_saves_a_model_folder(tmp_path, tiny_model_dir, packing):
    from steiner.tokenizer import load_model, load_tokenizer
    from steiner.train.sft import main

    out = main(_cfg(tmp_path, tiny_model_dir, packing=packing, max_steps=2, save_steps=100))
    summary = json.loads((out / "steiner_train.json").read_text())
    assert summary["global_step"] == 2 and summary["stage"] == "sft" and summary["data"]["conversations"] == 16
    assert summary["train_loss"] > 0
    load_model(out)
    assert "generation" in load_tokenizer(out).chat_template


def test_sft_lora_merges_on_save(tmp_path, tiny_model_dir):
    import torch

    from steiner.tokenizer import ReasoningTokenIds, load_model, load_tokenizer
    from steiner.train.sft import main

    out = main(_cfg(tmp_path, tiny_model_dir, lora=True, lora_r=4, lora_alpha=8, max_steps=2, save_steps=100,
                    gradient_checkpointing=True))
    assert not (out / "adapter_config.json").exists()
    merged = load_model(out)
    base = load_model(tiny_model_dir)
    ids = ReasoningTokenIds.from_tokenizer(load_tokenizer(out)).all()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert not torch.allclose(merged.get_input_embeddings().weight[ids], base.get_input_embeddings().weight[ids])
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(dict(merged.named_parameters())[q], dict(base.named_parameters())[q])


def test_sft_resumes_from_the_latest_checkpoint(tmp_path, tiny_model_dir):
    """Stop at step 2, rerun asking for 4: it continues from checkpoint-2 and ends where an
    uninterrupted 4-step run ends (same weights: optimizer state and data position restored)."""
    import torch

    from steiner.tokenizer import load_model
    from steiner.train.sft import main

    kw = dict(save_steps=2, lr_scheduler="constant", per_device_batch_size=1)
    out = main(_cfg(tmp_path, tiny_model_dir, max_steps=2, **kw))
    assert (out / "checkpoint-2").is_dir()
    out = main(_cfg(tmp_path, tiny_model_dir, max_steps=4, **kw))
    summary = json.loads((out / "steiner_train.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["global_step"] == 4
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3, 4]

    (tmp_path / "b").mkdir()
    straight = main(_cfg(tmp_path / "b", tiny_model_dir, max_steps=4, output_dir=str(tmp_path / "straight"), **kw))
    resumed, whole = load_model(out).state_dict(), load_model(straight).state_dict()
    for name, value in whole.items():
        assert torch.allclose(resumed[name], value, atol=1e-6), name


def test_packed_batches_keep_attention_inside_each_conversation(tmp_path, tiny_model_dir):
    """A packed batch, fed to the model as the Trainer feeds it, gives every conversation the logits it
    gets alone (no attention across conversations), and its padding tail carries no loss."""
    import torch
    from transformers import Trainer, TrainingArguments

    from steiner.train.common import load_model_and_tokenizer, trainer_kwargs
    from steiner.train.sft import IGNORE_INDEX, SFTCollator, build_dataset, pack

    cfg = _cfg(tmp_path, tiny_model_dir, packing=True, per_device_batch_size=2, max_length=512)
    model, tok = load_model_and_tokenizer(cfg)
    ds, stats = build_dataset(cfg, tok)
    packed = pack(ds, cfg.max_length, seed=0)
    assert len(packed) < len(ds) and sum(map(len, packed["input_ids"])) == stats["tokens"]
    trainer = Trainer(model=model, args=TrainingArguments(**trainer_kwargs(cfg)), train_dataset=packed,
                      data_collator=SFTCollator(tok.pad_token_id))
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 2
    model.eval()
    checked = 0
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        for row in range(2):
            pos = batch["position_ids"][row].tolist()
            starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
            for a, b in zip(starts, starts[1:], strict=False):
                if all(t == IGNORE_INDEX for t in batch["labels"][row, a:b].tolist()):
                    assert (batch["input_ids"][row, a:b] == tok.pad_token_id).all()  # the padding tail
                    continue
                alone = model(input_ids=batch["input_ids"][row : row + 1, a:b]).logits[0]
                assert torch.allclose(logits[row, a:b], alone, atol=1e-4)
                checked += 1
    assert checked > 2, "expected several conversations packed into the rows"


def test_multi_turn_history_trains_only_the_last_turn(tiny_tokenizer):
    from steiner.format import ReasoningPath, Step, path_to_dict, render
    from steiner.train.common import path_messages
    from steiner.train.sft import IGNORE_INDEX, tokenize_conversation

    first = ReasoningPath([Step("a", "t1", "first summary", "r1", "end")], "4")
    last = ReasoningPath([Step("b", "t2", "s2", "r2", "end")], "9")
    rec = {"question": "q2", **path_to_dict(last),
           "history": [{"question": "q1", **path_to_dict(first)}]}
    msgs = path_messages(rec)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    ex = tokenize_conversation(tiny_tokenizer, msgs)
    text = tiny_tokenizer.decode(ex["input_ids"])
    assert "first summary" in text and "t1" not in text  # the earlier turn is collapsed
    trained = tiny_tokenizer.decode([t for t, lab in zip(ex["input_ids"], ex["labels"], strict=True)
                                     if lab != IGNORE_INDEX])
    assert trained == render(last) + "<|im_end|>"
