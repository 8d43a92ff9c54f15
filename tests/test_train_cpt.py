"""CPT: mixture, packing into blocks, a real run that trains the reasoning-token embeddings, and compiled training."""

from __future__ import annotations

import json

import pytest

from steiner.config import ConfigError
from test_train_common import write_paths


def test_pack_blocks_joins_with_eos_and_cuts_full_blocks():
    from steiner.train.cpt import pack_blocks

    blocks = pack_blocks([[1, 2, 3], [4, 5], [6]], eos_id=0, block_size=4)
    assert blocks == [[1, 2, 3, 0], [4, 5, 0, 6]]  # the tail [0] is dropped


@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.8])
def test_mix_hits_the_reasoning_ratio(ratio):
    from steiner.train.cpt import mix

    text = [[1] * 10 for _ in range(200)]
    reasoning = [[2] * 10 for _ in range(200)]
    docs = mix(text, reasoning, ratio, seed=0)
    r = sum(len(d) for d in docs if d[0] == 2) / sum(map(len, docs))
    assert abs(r - ratio) < 0.03
    assert all(d[0] == 2 for d in mix(text, reasoning, 1.0, seed=0))
    assert all(d[0] == 1 for d in mix(text, reasoning, 0.0, seed=0))


def test_text_files_txt_and_jsonl(tmp_path):
    from steiner.train.cpt import read_text_files

    (tmp_path / "a.txt").write_text("first doc\nstill first\n\nsecond doc\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "third"}) + "\n")
    assert read_text_files([str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl")]) == [
        "first doc\nstill first", "second doc", "third"]
    (tmp_path / "c.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"c.jsonl: line 1.*'text'"):
        read_text_files([str(tmp_path / "c.jsonl")])


def test_config_errors():
    from steiner.train.cpt import CPTConfig

    with pytest.raises(ConfigError, match="reasoning_ratio"):
        CPTConfig(text_files=["x.txt"], reasoning_ratio=1.5)
    with pytest.raises(ConfigError, match="paths_files"):
        CPTConfig()


def test_cpt_trains_reasoning_embeddings(tmp_path, tiny_model_dir):
    import torch

    from conftest import CORPUS
    from steiner.tokenizer import ReasoningTokenIds, load_model, load_tokenizer
    from steiner.train.cpt import CPTConfig, main

    paths = write_paths(tmp_path / "paths.jsonl", n=16)
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(CORPUS[:10]))
    cfg = CPTConfig(model=str(tiny_model_dir), output_dir=str(tmp_path / "out"), paths_files=[str(paths)],
                    text_files=[str(text)], reasoning_ratio=0.5, max_length=64, per_device_batch_size=4,
                    max_steps=3, save_steps=100, logging_steps=1, learning_rate=1e-2,
                    report_to="tensorboard")
    out = main(cfg)
    ids = ReasoningTokenIds.from_tokenizer(load_tokenizer(tiny_model_dir)).all()
    before = load_model(tiny_model_dir).get_input_embeddings().weight[ids]
    after_model = load_model(out)
    after = after_model.get_input_embeddings().weight[ids]
    assert not torch.allclose(before, after), "reasoning-token embedding rows did not train"
    assert (out / "tokenizer.json").exists()
    assert "generation" in load_tokenizer(out).chat_template
    summary = json.loads((out / "steiner_train.json").read_text())
    assert summary["global_step"] == 3 and summary["stage"] == "cpt"
    assert summary["data"]["reasoning_tokens"] > 0 and summary["data"]["text_tokens"] > 0
    assert list((out / "runs").rglob("events.out.tfevents.*")), "no TensorBoard events written"


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["cpt", "sft"])
def test_torch_compile_trains_the_same_weights_as_eager(tmp_path, tiny_model_dir, stage):
    """torch_compile changes how a step runs, not what it computes: three steps compiled and eager end at
    the same weights (SFT on packed rows, whose attention restarts at every conversation), and the compiled
    run's folder loads as a plain model (no ``_orig_mod.`` keys)."""
    import torch
    from safetensors.torch import load_file
    from torch._dynamo.utils import counters

    from conftest import CORPUS
    from steiner.tokenizer import load_model
    from steiner.train.cpt import CPTConfig
    from steiner.train.cpt import main as cpt_main
    from steiner.train.sft import SteinerSFTConfig
    from steiner.train.sft import main as sft_main

    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(CORPUS[:10]))
    paths = write_paths(tmp_path / "paths.jsonl", n=16)
    outs, graphs = {}, {}
    for compiled in (False, True):
        counters.clear()
        common = dict(model=str(tiny_model_dir), output_dir=str(tmp_path / f"out{compiled}"), max_steps=3,
                      per_device_batch_size=4, save_steps=100, logging_steps=1, learning_rate=1e-2,
                      torch_compile=compiled)
        if stage == "cpt":
            outs[compiled] = cpt_main(CPTConfig(**common, text_files=[str(text)], reasoning_ratio=0.0, max_length=64))
        else:
            outs[compiled] = sft_main(SteinerSFTConfig(**common, paths_files=[str(paths)], packing=True,
                                                       max_length=512))
        graphs[compiled] = counters["stats"]["unique_graphs"]
    assert graphs[False] == 0 and graphs[True] > 0  # the option reached the Trainer
    assert not [k for k in load_file(outs[True] / "model.safetensors") if "_orig_mod" in k]
    eager, compiled = load_model(outs[False]).state_dict(), load_model(outs[True]).state_dict()
    start = load_model(tiny_model_dir).state_dict()
    for name, w in eager.items():
        assert torch.allclose(w, compiled[name], atol=1e-4), name
    assert any(not torch.allclose(w, start[name]) for name, w in eager.items())  # the steps did move the weights
