"""Shared training infrastructure: config validation, paths.jsonl reading, model loading, LoRA, resume.

Also holds the tiny paths.jsonl fixture builder the other train tests import.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steiner.config import ConfigError
from steiner.format import Step, step_to_dict

QUESTIONS = [
    ("Use 3, 5, 8 to reach 24.", "3*8=24", "24"),
    ("Use 2, 6, 4 to reach 12.", "2*6=12", "12"),
    ("Use 9, 1, 7 to reach 16.", "9+7=16", "16"),
    ("Use 5, 5, 2 to reach 20.", "5*2*2=20", "20"),
]


def make_path_record(i: int, question: str, answer_expr: str, backtrack: bool) -> dict:
    """One paths.jsonl record built from hand-made steps (optionally with a dead end and a backtrack)."""
    steps = []
    if backtrack:
        steps.append(Step("try a sum", f"Add the first two numbers of: {question}", "a sum", "too small, go back",
                          "backtrack", 0, meta={"node": f"q{i}-dead"}))
    steps.append(Step("combine", f"Consider {answer_expr} for: {question}", answer_expr, "this reaches the target",
                      "proceed", meta={"node": f"q{i}-a"}))
    steps.append(Step("check", f"Verify {answer_expr}.", "verified", "correct", "end", meta={"node": f"q{i}-b"}))
    return {
        "id": f"p{i}", "question_id": f"q{i}", "question": question, "answer": answer_expr.split("=")[-1],
        "steps": [step_to_dict(s) for s in steps], "final_answer": answer_expr,
        "source": "dag", "num_backtracks": int(backtrack),
    }


def write_paths(path: Path, n: int = 16) -> Path:
    """A tiny paths.jsonl: ``n`` records cycling through QUESTIONS, every other one with a backtrack."""
    with path.open("w") as f:
        for i in range(n):
            q, expr, _ = QUESTIONS[i % len(QUESTIONS)]
            f.write(json.dumps(make_path_record(i, q, expr, backtrack=i % 2 == 0)) + "\n")
    return path


def test_config_range_errors_name_the_field():
    from steiner.train.common import TrainConfig

    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig(learning_rate=0)
    with pytest.raises(ConfigError, match="per_device_batch_size"):
        TrainConfig(per_device_batch_size=0)
    with pytest.raises(ConfigError, match="lora_dropout"):
        TrainConfig(lora_dropout=1.5)
    with pytest.raises(ConfigError, match="max_steps"):
        TrainConfig(max_steps=0)
    assert TrainConfig(max_steps=-1).max_steps == -1


def test_read_paths_names_file_line_and_field(tmp_path):
    from steiner.train.common import path_messages, read_paths

    good = write_paths(tmp_path / "paths.jsonl", n=2)
    recs = read_paths([str(good)])
    assert len(recs) == 2 and recs[0][1].num_backtracks == 1
    msgs = path_messages(recs[0][0])
    assert msgs[1]["role"] == "assistant" and "meta" not in msgs[1]["steps"][0]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text().splitlines()[0] + "\n" + json.dumps({"question": "q", "steps": []}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl: line 2.*final_answer"):
        read_paths([str(bad)])
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl: line 1.*JSON"):
        read_paths(str(bad))
    rec = json.loads(good.read_text().splitlines()[0])
    rec["steps"][-1]["decision"] = "proceed"  # an answer after a step that did not end
    bad.write_text(json.dumps(rec) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl: line 1: bad reasoning path"):
        read_paths(str(bad))
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_paths(str(tmp_path / "nope.jsonl"))


def test_load_extends_a_tokenizer_without_reasoning_tokens(tmp_path, tiny_tokenizer):
    """A plain base model folder (no reasoning tokens) gets the tokens and embedding rows on load."""
    from conftest import CORPUS
    from steiner.modeling import build_model
    from steiner.tokenizer import ReasoningTokenIds, train_tokenizer
    from steiner.train.common import TrainConfig, load_model_and_tokenizer

    plain = train_tokenizer(CORPUS, vocab_size=300, extend_with_reasoning=False)
    build_model(plain).save_pretrained(tmp_path)
    plain.save_pretrained(tmp_path)
    with pytest.raises(ValueError):
        ReasoningTokenIds.from_tokenizer(plain)
    model, tok = load_model_and_tokenizer(TrainConfig(model=str(tmp_path)))
    ids = ReasoningTokenIds.from_tokenizer(tok)
    assert model.get_input_embeddings().weight.shape[0] > max(ids.all())
    with pytest.raises(ConfigError, match="model"):
        load_model_and_tokenizer(TrainConfig(model=""))


def test_lora_trains_embeddings_and_merges(tiny_model_dir):
    from steiner.train.common import TrainConfig, load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(TrainConfig(model=str(tiny_model_dir), lora=True, lora_r=4, lora_alpha=8))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable)
    assert any("embed_tokens" in n for n in trainable) and any("lm_head" in n for n in trainable)
    assert not any("mlp.up_proj.base_layer" in n for n in trainable)
    merged = model.merge_and_unload()
    assert not any("lora" in n for n, _ in merged.named_parameters())


def test_last_checkpoint_picks_highest_step(tmp_path):
    from steiner.train.common import last_checkpoint

    assert last_checkpoint(tmp_path / "missing") is None
    for n in (2, 10, 4):
        (tmp_path / f"checkpoint-{n}").mkdir()
        (tmp_path / f"checkpoint-{n}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-20").mkdir()  # no trainer_state: an interrupted save
    assert last_checkpoint(tmp_path).name == "checkpoint-10"
