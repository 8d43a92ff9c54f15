"""Where completions come from: a local transformers model or any OpenAI-compatible endpoint.

Both backends take a list of `Request`s (one chat conversation and its cache key each) and call
``on_output(request, output)`` as each finishes, so the runner can cache every sample the moment it
exists and a rerun resumes where an interrupted one stopped.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from steiner.format import REASONING_END, REASONING_START
from steiner.infer.options import DecodeOptions


@dataclass(frozen=True)
class GenSettings(DecodeOptions):
    """`DecodeOptions` with evaluation's defaults (a fixed seed); the settings are part of each sample's
    cache key."""

    temperature: float = 0.7
    max_new_tokens: int = 2048
    seed: int = 0

    def key(self, system: str | None = None) -> str:
        """A short stable hash of the settings (the cache key part), and of the ``system`` message sent with
        every question when there is one: other instructions are other samples."""
        k = format(zlib.crc32(json.dumps(asdict(self), sort_keys=True).encode()), "08x")
        return f"{k}-{zlib.crc32(system.encode()):08x}" if system else k


@dataclass
class Request:
    """One sample to generate: ``messages`` for question ``question_id``, sample index ``sample``."""

    question_id: str
    sample: int
    messages: list[dict[str, Any]]


@dataclass
class Output:
    """One completion. ``text`` is the full completion with reasoning tokens where known (the local
    model's text; an endpoint's reasoning + content); ``answer`` the text after reasoning."""

    text: str = ""
    answer: str = ""
    reasoning: str = ""
    reasoning_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None
    latency_s: float | None = None


OnOutput = Callable[[Request, Output], None]


class LocalBackend:
    """A save_pretrained folder run with `steiner.infer.generate` (batched, step-bounded, format processors)."""

    kind = "local"

    def __init__(self, model_dir: str | Path, *, device: str | None = None, batch_size: int = 16,
                 dtype: str | None = None) -> None:
        import torch

        from steiner.tokenizer import load_model, load_tokenizer

        self.model_dir = str(model_dir)
        self.tokenizer = load_tokenizer(model_dir)
        kwargs: dict[str, Any] = {}
        if dtype:
            kwargs["dtype"] = getattr(torch, dtype)
        self.model = load_model(model_dir, **kwargs)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(device).eval()
        self.batch_size = batch_size

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.model_dir}

    def run(self, requests: list[Request], settings: GenSettings, on_output: OnOutput) -> None:
        from steiner.infer import generate

        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            # the seed depends on which samples the chunk holds, not on what a previous run left
            first = chunk[0]
            seed = (settings.seed * 1_000_003 + zlib.crc32(f"{first.question_id}:{first.sample}".encode())) % 2**31
            t0 = time.perf_counter()
            gens = generate(self.model, self.tokenizer, [r.messages for r in chunk], replace(settings, seed=seed), n=1,
                            batch_size=self.batch_size)
            per = (time.perf_counter() - t0) / len(chunk)
            for req, g in zip(chunk, gens, strict=True):
                gen = g[0]
                on_output(req, Output(
                    text=gen.text, answer=gen.answer, reasoning=gen.reasoning,
                    reasoning_tokens=gen.reasoning_tokens, completion_tokens=gen.completion_tokens,
                    finish_reason=gen.finish_reason, latency_s=per,
                ))


def _message_field(msg: Any, name: str) -> Any:
    value = getattr(msg, name, None)
    if value is None and getattr(msg, "model_extra", None):
        value = msg.model_extra.get(name)
    return value


def full_text(reasoning: str, content: str) -> str:
    """Rebuild a Steiner completion from an endpoint's reasoning and content, when the reasoning
    carries the reasoning tokens; otherwise the content alone (a plain model, another format)."""
    if reasoning and REASONING_START in reasoning:
        return reasoning + ("" if REASONING_END in reasoning else REASONING_END) + content
    return content


class EndpointBackend:
    """Any OpenAI-compatible chat endpoint through the official `openai.AsyncOpenAI` client.

    Requests run concurrently under a semaphore of ``concurrency``; the client retries timeouts,
    connection errors, 408/409/429 and 5xx ``max_retries`` times with exponential backoff (honouring
    Retry-After). A request that still fails becomes an `Output` with ``error`` set: recorded, never
    correct. min_steps/max_steps/format_strict go in ``extra_body`` only when they differ from the
    defaults, so servers that reject unknown fields (api.openai.com) still work.
    """

    kind = "endpoint"

    def __init__(self, base_url: str, model_name: str, *, api_key: str | None = None, concurrency: int = 16,
                 max_retries: int = 3, timeout: float = 600.0, extra_body: dict[str, Any] | None = None) -> None:
        if not model_name:
            raise ValueError("an endpoint needs a model name (--model-name)")
        self.base_url = base_url
        self.model_name = model_name
        self.api_key = api_key
        self.concurrency = max(1, concurrency)
        self.max_retries = max_retries
        self.timeout = timeout
        self.extra_body = dict(extra_body or {})

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.model_name, "base_url": self.base_url}

    def _body(self, settings: GenSettings) -> dict[str, Any]:
        body = dict(self.extra_body)
        if settings.min_steps:
            body["min_steps"] = settings.min_steps
        if settings.max_steps is not None:
            body["max_steps"] = settings.max_steps
        if settings.format_strict:
            body["format_strict"] = True
        if settings.max_reasoning_tokens is not None:
            body["max_reasoning_tokens"] = settings.max_reasoning_tokens
        return body

    def run(self, requests: list[Request], settings: GenSettings, on_output: OnOutput) -> None:
        asyncio.run(self._run_all(requests, settings, on_output))

    async def _run_all(self, requests: list[Request], settings: GenSettings, on_output: OnOutput) -> None:
        import os

        from openai import AsyncOpenAI

        client = AsyncOpenAI(
            base_url=self.base_url, api_key=self.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
            max_retries=self.max_retries, timeout=self.timeout,
        )
        sem = asyncio.Semaphore(self.concurrency)
        body = self._body(settings)

        async def one(req: Request) -> None:
            async with sem:
                out = await self._request(client, req, settings, body)
            on_output(req, out)

        try:
            await asyncio.gather(*(one(r) for r in requests))
        finally:
            await client.close()

    async def _request(self, client: Any, req: Request, settings: GenSettings, body: dict[str, Any]) -> Output:
        import openai

        t0 = time.perf_counter()
        try:
            resp = await client.chat.completions.create(
                model=self.model_name, messages=req.messages, temperature=settings.temperature,
                top_p=settings.top_p, max_tokens=settings.max_new_tokens, extra_body=body or None,
            )
        except openai.APIStatusError as e:
            return Output(error=f"HTTP {e.status_code}: {e.message}", latency_s=time.perf_counter() - t0)
        except (openai.APIError, OSError) as e:
            return Output(error=f"{type(e).__name__}: {e}", latency_s=time.perf_counter() - t0)
        latency = time.perf_counter() - t0
        if not resp.choices:
            return Output(error="the response has no choices", latency_s=latency)
        choice = resp.choices[0]
        msg = choice.message
        content = msg.content or ""
        reasoning = _message_field(msg, "reasoning_content") or _message_field(msg, "reasoning") or ""
        text = full_text(reasoning, content)
        answer = content
        if not reasoning and REASONING_START in content:  # reasoning left inside content: split it here
            from steiner.format import split_reasoning

            reasoning, answer = split_reasoning(content)
        usage = resp.usage
        details = getattr(usage, "completion_tokens_details", None) if usage else None
        return Output(
            text=text, answer=answer, reasoning=reasoning,
            reasoning_tokens=getattr(details, "reasoning_tokens", None) if details else None,
            completion_tokens=usage.completion_tokens if usage else None,
            finish_reason=choice.finish_reason, latency_s=latency,
        )
