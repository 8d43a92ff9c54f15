"""`steiner train cpt|sft`: YAML + flags, errors naming keys and values, and 2-process data parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from steiner.cli import main as cli
from test_train_common import write_paths


def _yaml(tmp_path: Path, **kw) -> str:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(kw))
    return str(p)


def test_unknown_key_and_bad_value_are_errors_naming_them(tmp_path, tiny_model_dir, capsys):
    paths = str(write_paths(tmp_path / "p.jsonl", n=2))
    cfg = _yaml(tmp_path, model=str(tiny_model_dir), paths_files=[paths], lerning_rate=0.1)
    assert cli(["train", "sft", "--config", cfg]) == 2
    assert "lerning_rate" in capsys.readouterr().err
    cfg = _yaml(tmp_path, model=str(tiny_model_dir), paths_files=[paths])
    assert cli(["train", "sft", "--config", cfg, "--learning-rate", "-1"]) == 2
    assert "learning_rate" in capsys.readouterr().err
    assert cli(["train", "cpt", "--config", cfg, "--reasoning-ratio", "2"]) == 2
    assert "reasoning_ratio" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["train", "sft", "--config", cfg, "--no-such-flag", "1"])


def test_example_configs_parse():
    from steiner.config import load_config
    from steiner.train.cpt import CPTConfig
    from steiner.train.sft import SteinerSFTConfig

    root = Path(__file__).parent.parent / "configs"
    assert load_config(CPTConfig, root / "cpt.yaml").reasoning_ratio == 0.5
    for name in ("sft.yaml", "sft_lora_7b.yaml"):
        assert load_config(SteinerSFTConfig, root / name).packing
    for f in (root / "accelerate").glob("*.yaml"):
        assert yaml.safe_load(f.read_text())["num_processes"] >= 2


def test_cli_runs_cpt_with_flag_overrides(tmp_path, tiny_model_dir):
    paths = str(write_paths(tmp_path / "p.jsonl", n=8))
    out = tmp_path / "out"
    cfg = _yaml(tmp_path, model=str(tiny_model_dir), paths_files=[paths], max_steps=5, max_length=32,
                per_device_batch_size=2, reasoning_ratio=1.0)
    assert cli(["train", "cpt", "--config", cfg, "--max-steps", "1", "--output-dir", str(out),
                "--save-steps", "50"]) == 0
    summary = json.loads((out / "steiner_train.json").read_text())
    assert summary["global_step"] == 1 and summary["config"]["max_length"] == 32


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LAUNCHERS = {
    "torchrun": ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "{port}"],
    "accelerate": ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                   "--main_process_port", "{port}"],
}


# the accelerate variant is the same code path under another launcher: slow, to keep the quick suite quick
@pytest.mark.parametrize("launcher", ["torchrun", pytest.param("accelerate", marks=pytest.mark.slow)])
def test_two_processes_train_in_sync(tmp_path, tiny_model_dir, launcher):
    """2 CPU processes (gloo) under torchrun or accelerate: both see world size 2, end with equal weights."""
    paths = str(write_paths(tmp_path / "p.jsonl", n=16))
    out = tmp_path / "out"
    launch = [a.format(port=_free_port()) for a in LAUNCHERS[launcher]]
    cmd = [sys.executable, *launch, "-m", "steiner.cli", "train", "sft", "--model", str(tiny_model_dir), "--paths-files", paths,
           "--output-dir", str(out), "--max-steps", "3", "--save-steps", "100", "--max-length", "512",
           "--per-device-batch-size", "2", "--learning-rate", "0.01", "--write-rank-checksums", "true",
           "--use-cpu", "true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank_{i}.json").read_text()) for i in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["env_world_size"] for r in ranks] == [2, 2]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 3
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    # and the weights did change: the saved model differs from the start
    from steiner.tokenizer import load_model
    from steiner.train.common import weights_checksum

    assert weights_checksum(load_model(out)) != weights_checksum(load_model(tiny_model_dir))
