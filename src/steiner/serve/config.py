"""`ServeConfig`: every option of `steiner serve`, documented once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from steiner.config import check_range, opt


@dataclass
class ServeConfig:
    """Options of the OpenAI-compatible server."""

    model: str = opt("", "save_pretrained folder of the model (and tokenizer) to serve")
    engine: Literal["steiner", "vllm"] = opt(
        "steiner", "steiner: the built-in continuous-batching engine; vllm: vLLM's OpenAI server with steiner's "
        "reasoning parser and logits processors (needs vLLM: scripts/setup_vllm.sh)")
    tokenizer: str | None = opt(None, "tokenizer folder when it is not the model folder")
    host: str = opt("127.0.0.1", "interface to listen on")
    port: int = opt(8000, "TCP port to listen on")
    api_key: str | None = opt(None, "require `Authorization: Bearer KEY` on /v1/* (401 otherwise)")
    served_model_name: str | None = opt(None, "model id clients send and /v1/models lists (default: folder name)")
    max_batch_size: int = opt(32, "most samples decoded together in one forward pass")
    batch_wait_ms: float = opt(5.0, "how long an idle server waits after a request for others to batch with")
    max_tokens: int | None = opt(None, "default max_tokens of a request (default: the rest of the context)")
    reasoning_format: Literal["raw", "pretty"] = opt(
        "raw", "reasoning_content as the raw reasoning text with its tokens (parses back to steps) or as "
        "numbered readable steps (streamed once the reasoning ends; earlier turns found in a server-side map)")
    device: str = opt("auto", "torch device: auto (cuda if available), cpu, cuda, cuda:1, ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = opt("auto", "weights dtype (auto: as saved)")
    torch_threads: int | None = opt(None, "torch intra-op threads (1 is fastest for tiny models on busy CPUs)")
    log_level: str = opt("info", "uvicorn log level")
    vllm_python: str | None = opt(None, "--engine vllm: interpreter with vLLM (default: this one, else .venv-vllm)")
    vllm_args: str = opt("", "--engine vllm: extra vLLM server arguments, e.g. '--max-model-len 4096'")

    def __post_init__(self) -> None:
        check_range("port", self.port, lo=0, hi=65535)
        check_range("max_batch_size", self.max_batch_size, lo=1)
        check_range("batch_wait_ms", self.batch_wait_ms, lo=0)
        check_range("max_tokens", self.max_tokens, lo=1)
        check_range("torch_threads", self.torch_threads, lo=1)
