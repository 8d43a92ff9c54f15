"""Serving throughput: `steiner serve` at concurrency 1, 8 and 32 against sequential `model.generate`.

Both sides run the same tiny Qwen2 model (built from a config, tokenizer trained here, nothing downloaded)
with the step-bounds logits processor and sampling, every completion exactly ``--tokens`` long
(``ignore_eos`` on the server, ``min_new_tokens`` for generate). The server runs as its own process
(``steiner serve``); clients are the official async ``openai`` client. Prints tokens/s, p50/p99
request latency and the speed-up over sequential generate.

    .venv/bin/python benchmarks/serve.py [--tokens 128] [--concurrency 1,8,32] [--threads 1]
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
    """A tiny untrained model + tokenizer saved to ``out``."""
    from steiner.modeling import build_model
    from steiner.tokenizer import train_tokenizer

    tok = train_tokenizer(CORPUS, vocab_size=400)
    build_model(tok).save_pretrained(out)
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


async def load(base_url: str, concurrency: int, requests: int, tokens: int) -> dict:
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
                                                     extra_body={"ignore_eos": True})
            lat.append(time.perf_counter() - t0)
            done += r.usage.completion_tokens

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    await client.close()
    return {"tok_s": done / wall, "p50": percentile(lat, 50), "p99": percentile(lat, 99)}


def serve(model_dir: Path, threads: int) -> tuple[subprocess.Popen, str]:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "steiner.cli", "serve", "--model", str(model_dir), "--port",
                             str(port), "--served-model-name", "tiny", "--torch-threads", str(threads),
                             "--log-level", "warning"], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, f"http://127.0.0.1:{port}/v1"
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("steiner serve did not start")
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
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as d:
        model_dir = Path(d)
        build(model_dir)
        base = baseline(model_dir, args.tokens, args.baseline_requests)
        proc, url = serve(model_dir, args.threads)
        try:
            asyncio.run(load(url, 1, 2, args.tokens))  # warm-up
            rows = [(c, asyncio.run(load(url, c, args.requests or max(8, 2 * c), args.tokens))) for c in levels]
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
    table = Table(title=f"steiner serve vs sequential generate ({args.tokens} tokens/request, "
                        f"{args.threads} torch thread(s), {os.cpu_count()} CPUs)")
    for col in ("setup", "tokens/s", "p50 latency s", "p99 latency s", "x generate"):
        table.add_column(col, justify="right")
    table.add_row("generate, sequential", f"{base['tok_s']:.0f}", f"{base['p50']:.3f}", f"{base['p99']:.3f}", "1.00")
    for c, r in rows:
        table.add_row(f"serve, concurrency {c}", f"{r['tok_s']:.0f}", f"{r['p50']:.3f}", f"{r['p99']:.3f}",
                      f"{r['tok_s'] / base['tok_s']:.2f}")
    Console(width=120).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
