"""`steiner serve --engine vllm`: vLLM's OpenAI server with steiner's reasoning parser and logits processors.

vLLM lives in its own venv (``scripts/setup_vllm.sh`` makes ``.venv-vllm``) or in this interpreter. The
server is vLLM's own (``vllm.entrypoints.openai.api_server``), started with:

- ``--reasoning-parser-plugin steiner.infer.vllm_plugin --reasoning-parser steiner``: reasoning in
  ``reasoning_content``/``reasoning``, the answer in ``content``;
- ``--logits-processors`` ``SteinerFormatLogitsProcessor`` and ``SteinerStepBoundsLogitsProcessor``:
  requests opt in with ``vllm_xargs`` (``{"min_steps": 2, "max_steps": 6}``, ``{"format_strict": true}``,
  ``{"max_reasoning_tokens": 256}``), as vLLM takes custom per-request options.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
from pathlib import Path

from steiner.serve.config import ServeConfig

PROCESSORS = ("steiner.infer.vllm_processors:SteinerFormatLogitsProcessor",
              "steiner.infer.vllm_processors:SteinerStepBoundsLogitsProcessor")
REPO_VENV = Path(__file__).resolve().parents[3] / ".venv-vllm" / "bin" / "python"


def vllm_python(cfg: ServeConfig) -> str:
    """The interpreter that runs vLLM: ``cfg.vllm_python``, else this one if vLLM imports here, else the
    repository's ``.venv-vllm``; a clear error when there is none."""
    if cfg.vllm_python:
        if not Path(cfg.vllm_python).exists():
            raise FileNotFoundError(f"--vllm-python {cfg.vllm_python}: no such interpreter")
        return cfg.vllm_python
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    if REPO_VENV.exists():
        return str(REPO_VENV)
    raise RuntimeError("--engine vllm needs vLLM: run `bash scripts/setup_vllm.sh` (makes .venv-vllm) or give "
                       "--vllm-python PATH")


def vllm_command(cfg: ServeConfig, python: str) -> list[str]:
    """The vLLM server command line for ``cfg``."""
    if not cfg.model:
        raise ValueError("--model is required: a save_pretrained folder")
    if cfg.reasoning_format != "raw":
        raise ValueError("--reasoning-format pretty is steiner's engine only; vLLM returns the raw reasoning")
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", cfg.model, "--host", cfg.host,
           "--port", str(cfg.port), "--served-model-name", cfg.served_model_name or Path(cfg.model).name,
           "--max-num-seqs", str(cfg.max_batch_size), "--logits-processors", *PROCESSORS,
           "--reasoning-parser-plugin", "steiner.infer.vllm_plugin", "--reasoning-parser", "steiner",
           "--uvicorn-log-level", cfg.log_level]
    if cfg.tokenizer:
        cmd += ["--tokenizer", cfg.tokenizer]
    if cfg.dtype != "auto":
        cmd += ["--dtype", cfg.dtype]
    if cfg.api_key:
        cmd += ["--api-key", cfg.api_key]
    return cmd + shlex.split(cfg.vllm_args)


def run(cfg: ServeConfig) -> int:
    """Replace this process with vLLM's server (signals then reach vLLM directly)."""
    python = vllm_python(cfg)
    cmd = vllm_command(cfg, python)
    env = {**os.environ, "VLLM_NO_USAGE_STATS": "1"}
    if cfg.torch_threads:
        env.setdefault("OMP_NUM_THREADS", str(cfg.torch_threads))
    print("starting vLLM:", shlex.join(cmd), flush=True)
    os.execve(python, cmd, env)
    return 0  # not reached
