"""Serving throughput: `steiner serve` at concurrency 1, 8 and 32 against sequential `model.generate`,
and vLLM (`steiner serve --engine vllm`) side by side on the same model when vLLM is installed.

All sides run the same model -- ``--model DIR`` (the demo's), else a random model shaped like the
demo's (4 layers, 128 wide, 4 heads: vLLM's CPU attention needs head_dim 32) built here, nothing
downloaded -- with the step-bounds logits processor and sampling, every completion exactly ``--tokens``
long (``ignore_eos``; ``min_new_tokens`` for generate). Servers run as their own processes; clients
are the official async ``openai`` client. Prints tokens/s, p50/p99 request latency, the speed-up over
sequential generate and, with vLLM (``.venv-vllm`` from scripts/setup_vllm.sh, or ``--vllm-python``),
steiner's tokens/s as a share of vLLM's at each concurrency.

    .venv/bin/python benchmarks/serve.py [--model DIR] [--tokens 128] [--concurrency 1,8,32] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CORPUS = [
    "Use the numbers 3, 5, 7 and 11 to reach 24 with + - * /. Each number once.",
    "Step: combine 3 and 5 with + to get 8. Remaining numbers: 7, 8, 11. Summary: 3+5=8.",
    "Reflection: this line looks promising; 8 and 11 are still far from 24. Backtrack and try 7*3=21.",
    "Plain text about the weather, cooking, and history keeps the tokenizer general.",
] * 20
PROMPT = [{"role": "user", "content": "Using 3, 5, 7 and 11 once each, reach 24."}]


def build(out: Path) -> None:
    """A random demo-shaped model + tokenizer saved to ``out``."""
    from steiner.modeling import TinyModelConfig, build_model
    from steiner.tokenizer import train_tokenizer

    tok = train_tokenizer(CORPUS, vocab_size=400)
    build_model(tok, TinyModelConfig(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512)
                ).save_pretrained(out)
    tok.save_pretrained(out)


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def baseline(model_dir: Path, tokens: int, requests: int) -> dict:
    """Sequential transformers generate, one request after another."""
    import torch
    from transformers import LogitsProcessorList

    from steiner.infer import StepBoundsLogitsProcessor
    from steiner.tokenizer import load_model, load_tokenizer

    tok, model = load_tokenizer(model_dir), load_model(model_dir).eval()
    ids = tok.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True, return_dict=False)
    x = torch.tensor([ids])
    lat = []
    with torch.inference_mode():
        for _ in range(requests + 1):
            t0 = time.perf_counter()
            out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=tokens, min_new_tokens=tokens,
                                 do_sample=True, logits_processor=LogitsProcessorList([StepBoundsLogitsProcessor(tok)]),
                                 pad_token_id=tok.pad_token_id)
            lat.append(time.perf_counter() - t0)
            assert out.shape[1] - x.shape[1] == tokens
    lat = lat[1:]  # the first is warm-up
    return {"tok_s": tokens * len(lat) / sum(lat), "p50": percentile(lat, 50), "p99": percentile(lat, 99)}


async def load(base_url: str, concurrency: int, requests: int, tokens: int, extra: dict | None = None) -> dict:
    """``requests`` chat completions from ``concurrency`` concurrent clients."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=600)
    lat: list[float] = []
    done = 0
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker() -> None:
        nonlocal done
        while not queue.empty():
            queue.get_nowait()
            t0 = time.perf_counter()
            r = await client.chat.completions.create(model="tiny", messages=PROMPT, max_tokens=tokens,
                                                     extra_body={"ignore_eos": True, **(extra or {})})
            lat.append(time.perf_counter() - t0)
            done += r.usage.completion_tokens

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    await client.close()
    return {"tok_s": done / wall, "p50": percentile(lat, 50), "p99": percentile(lat, 99)}


def serve(model_dir: Path, threads: int, vllm: str | None = None) -> tuple[subprocess.Popen, str]:
    """Start `steiner serve` (or, with ``vllm`` an interpreter, `steiner serve --engine vllm`)."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "steiner.cli", "serve", "--model", str(model_dir), "--port", str(port),
           "--served-model-name", "tiny", "--torch-threads", str(threads), "--log-level", "warning"]
    if vllm:
        cmd += ["--engine", "vllm", "--vllm-python", vllm, "--dtype", "float32",
                "--vllm-args", "--max-model-len 2048 --enforce-eager"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "4"}
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + (600 if vllm else 120)
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, f"http://127.0.0.1:{port}/v1"
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{'vLLM' if vllm else 'steiner serve'} did not start")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=128, help="completion tokens per request")
    ap.add_argument("--concurrency", default="1,8,32", help="client concurrency levels")
    ap.add_argument("--requests", type=int, default=0, help="requests per level (default: max(8, 2 x concurrency))")
    ap.add_argument("--baseline-requests", type=int, default=8, help="sequential generate requests")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, both sides (1 suits tiny models)")
    ap.add_argument("--model", default=None, help="save_pretrained folder (default: a random demo-shaped model)")
    ap.add_argument("--vllm-python", default=None, help="interpreter with vLLM (default: .venv-vllm if present)")
    ap.add_argument("--no-vllm", action="store_true", help="skip the vLLM side")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    levels = [int(c) for c in args.concurrency.split(",")]
    vllm = None
    if not args.no_vllm:
        from steiner.serve.vllm import REPO_VENV

        vllm = args.vllm_python or (str(REPO_VENV) if REPO_VENV.exists() else None)

    def measure(model_dir: Path, python: str | None) -> list[tuple[int, dict]]:
        # vLLM opts each request into steiner's step-bounds processor, which steiner serve always applies
        extra = {"vllm_xargs": {"min_steps": 0}} if python else None
        proc, url = serve(model_dir, args.threads, python)
        try:
            asyncio.run(load(url, 1, 2, args.tokens, extra))  # warm-up
            return [(c, asyncio.run(load(url, c, args.requests or max(8, 2 * c), args.tokens, extra)))
                    for c in levels]
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()

    with tempfile.TemporaryDirectory() as d:
        model_dir = Path(args.model) if args.model else Path(d)
        if not args.model:
            build(model_dir)
        base = baseline(model_dir, args.tokens, args.baseline_requests)
        rows = measure(model_dir, None)
        vrows = measure(model_dir, vllm) if vllm else []
    table = Table(title=f"steiner serve vs sequential generate ({args.tokens} tokens/request, "
                        f"{args.threads} torch thread(s), {os.cpu_count()} CPUs)")
    for col in ("setup", "tokens/s", "p50 latency s", "p99 latency s", "x generate"):
        table.add_column(col, justify="right")
    table.add_row("generate, sequential", f"{base['tok_s']:.0f}", f"{base['p50']:.3f}", f"{base['p99']:.3f}", "1.00")
    for c, r in rows:
        table.add_row(f"serve, concurrency {c}", f"{r['tok_s']:.0f}", f"{r['p50']:.3f}", f"{r['p99']:.3f}",
                      f"{r['tok_s'] / base['tok_s']:.2f}")
    for c, r in vrows:
        table.add_row(f"vLLM, concurrency {c}", f"{r['tok_s']:.0f}", f"{r['p50']:.3f}", f"{r['p99']:.3f}",
                      f"{r['tok_s'] / base['tok_s']:.2f}")
    console = Console(width=120)
    console.print(table)
    for (c, r), (_, v) in zip(rows, vrows, strict=False):
        console.print(f"concurrency {c}: steiner serve / vLLM = {r['tok_s'] / v['tok_s']:.2f}x")
    if not vrows:
        console.print("vLLM side skipped (no .venv-vllm: bash scripts/setup_vllm.sh)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
