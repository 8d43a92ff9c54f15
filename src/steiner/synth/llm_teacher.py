"""LLM teachers for data synthesis: any OpenAI-compatible endpoint, or a local transformers chat model.

Both speak the prompts of `steiner.synth.prompts` (JSON steps with a one-shot example) and parse the
replies tolerantly (LaTeX kept, think blocks dropped); a reply that still cannot be parsed is a failed
attempt: counted by reason, written to the rejects file with the raw reply, retried, never cached. A
reply cut at the token budget (``finish_reason == "length"``) is its own reason: it is retried once
with twice the budget, then reported, never retried identically. Successful replies go to an on-disk
cache (`steiner.synth.cache`) keyed by model, messages, seed and sampling parameters -- not by the
base URL, the output mode or a budget increase -- so a rerun of synthesis never pays for a request twice.

`OpenAITeacher` holds one `openai.AsyncOpenAI` client per base URL and asks for structured output: a
JSON Schema per call (``response_format`` type ``json_schema``, enforced by vLLM, SGLang and OpenAI);
with ``output="auto"`` a server that rejects it is asked with ``json_object``, then with plain text.
Each request goes to the least busy healthy URL (round-robin among equals); a URL that fails
``breaker_failures`` times in a row is benched for ``breaker_seconds`` (doubling while it keeps
failing), so a URL that fails instantly does not win the routing. Concurrency is bounded by one
semaphore; timeouts, connection errors, 429 and 5xx are retried with exponential backoff on the
*next* URL; other 4xx fail fast. `LocalTeacher` runs ``apply_chat_template`` + ``generate`` in a
worker thread and batches the requests that arrive together.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steiner.format import Step
from steiner.jsonl import dump_line
from steiner.synth.cache import DiskCache, request_key
from steiner.synth.prompts import (
    TeacherError,
    TeacherReplyError,
    forward_messages,
    parse_forward_reply,
    parse_reference_reply,
    parse_reveal_reply,
    reference_messages,
    response_format,
    reveal_messages,
)

__all__ = ["LocalTeacher", "OpenAITeacher", "TeacherError", "TeacherReplyError", "TeacherRequestError", "TeacherStats"]

OUTPUT_MODES = ("auto", "json_schema", "json_object", "text")


class TeacherRequestError(TeacherError):
    """A request that failed at the transport or HTTP level; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


@dataclass
class TeacherStats:
    """Counters of one teacher; ``reply_errors`` and ``request_errors`` count failed attempts by reason."""

    calls: int = 0  # reference/forward/reveal calls
    requests: int = 0  # HTTP requests sent, or sequences generated locally
    cache_hits: int = 0
    retries: int = 0  # attempts after the first, whatever the reason
    failures: int = 0  # calls that gave up after all retries (or on a non-retryable error)
    malformed: int = 0  # replies the parser rejected (or cut at the token budget)
    budget_raises: int = 0  # retries with twice the token budget after finish_reason "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reply_errors: Counter = field(default_factory=Counter)  # parser code -> count, e.g. {"no_json": 2, "length": 1}
    request_errors: Counter = field(default_factory=Counter)  # "timeout", "connection", "http_429", ...
    per_url: Counter = field(default_factory=Counter)  # base URL -> requests sent
    benched: Counter = field(default_factory=Counter)  # base URL -> times the circuit breaker benched it
    output_modes: list = field(default_factory=list)  # structured-output modes tried, in order

    def as_dict(self) -> dict[str, Any]:
        return {k: dict(v) if isinstance(v, Counter) else v for k, v in self.__dict__.items()}


Parse = Callable[[str], Any]


class _ChatTeacher:
    """The three teacher calls on top of one ``_attempt(kind, messages, seed, state) -> (text, finish_reason)``."""

    def __init__(self, name: str, model_id: str, sampling: dict[str, Any], max_retries: int,
                 cache_dir: str | Path | None, max_reference_steps: int = 8,
                 rejects_path: str | Path | None = None, budget_key: str = "max_tokens") -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if int(sampling.get(budget_key) or 0) < 1:
            raise ValueError(f"{budget_key} must be >= 1, got {sampling.get(budget_key)!r}")
        self.name = name
        self.model_id = model_id
        self.sampling = sampling
        self.budget_key = budget_key
        self.max_retries = max_retries
        self.max_reference_steps = max_reference_steps
        self.cache = DiskCache(cache_dir) if cache_dir is not None else None
        self.rejects_path = Path(rejects_path) if rejects_path is not None else None
        self.stats = TeacherStats()

    async def reference(self, q: Any) -> tuple[list[Step], str]:
        """A clean path to ``q.answer`` and the final answer."""
        msgs = reference_messages(q.question, q.answer, self.max_reference_steps)
        steps, answer = await self._ask("reference", msgs, 0, parse_reference_reply, q.id)
        return self._mark(steps), answer

    async def forward(self, q: Any, prefix: list[Step], n_steps: int, seed: int) -> list[Step]:
        """Up to ``n_steps`` steps continuing ``prefix``, the answer hidden."""
        msgs = forward_messages(q.question, prefix, n_steps)
        return self._mark(await self._ask("forward", msgs, seed, lambda text: parse_forward_reply(text, n_steps), q.id))

    async def reveal(self, q: Any, prefix: list[Step], attempt: list[Step], seed: int) -> Any:
        """A `Revealed`: new reflection for the attempt's last step, where to resume, the continuation.

        A right attempt whose reveal has no reflection keeps the attempt's own.
        """
        steps = list(prefix) + list(attempt)
        msgs = reveal_messages(q.question, q.answer, steps)
        revealed = await self._ask("reveal", msgs, seed, lambda text: parse_reveal_reply(text, len(steps)), q.id)
        if not revealed.reflection and steps:
            revealed.reflection = steps[-1].reflection
        self._mark(revealed.steps)
        return revealed

    def _mark(self, steps: list[Step]) -> list[Step]:
        for s in steps:
            s.meta.setdefault("teacher", self.name)
        return steps

    def cache_key(self, messages: list[dict[str, str]], seed: int) -> str:
        """The cache key of a request: model, messages, sampling parameters and seed (never the URL)."""
        return request_key({"model": self.model_id, "messages": messages, "sampling": self.sampling, "seed": seed})

    def _reject(self, kind: str, qid: str, text: str, code: str, message: str, finish: str | None) -> None:
        """Append an unusable reply, with its reason, to the rejects file."""
        if self.rejects_path is None:
            return
        self.rejects_path.parent.mkdir(parents=True, exist_ok=True)
        rec = {"question_id": qid, "call": kind, "teacher": self.name, "reason": code, "message": message,
               "finish_reason": finish, "reply": text}
        with self.rejects_path.open("a", encoding="utf-8") as fh:
            fh.write(dump_line(rec))

    async def _ask(self, kind: str, messages: list[dict[str, str]], seed: int, parse: Parse, qid: str = "") -> Any:
        self.stats.calls += 1
        key = self.cache_key(messages, seed)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None and isinstance(hit.get("reply"), str):
                try:
                    result = parse(hit["reply"])
                except TeacherReplyError:
                    pass  # written by an older parser; ask again
                else:
                    self.stats.cache_hits += 1
                    return result
        state: dict[str, Any] = {"budget": int(self.sampling[self.budget_key])}
        errors: list[str] = []
        last: TeacherError | None = None
        n_malformed = 0
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.stats.retries += 1
                await self._before_retry(attempt, last)
            # after a malformed reply ask with another seed: a seeded server would repeat itself
            try:
                text, finish = await self._attempt(kind, messages, seed + 7919 * n_malformed, state)
            except TeacherRequestError as e:
                last = e
                errors.append(str(e))
                if not e.retryable:
                    break
                continue
            except TeacherReplyError as e:  # no content at all
                text, finish, last = "", None, e
                n_malformed += 1
                self._count_malformed(e, kind, qid, text, finish)
                errors.append(f"malformed reply ({e.code}): {e}")
                continue
            if finish == "length":
                n_malformed += 1
                budget = state["budget"]
                last = TeacherReplyError(f"reply cut at the token budget ({budget} tokens, finish_reason 'length')",
                                         "length")
                self._count_malformed(last, kind, qid, text, finish)
                errors.append(f"malformed reply (length): {last}")
                if state.get("raised"):
                    break  # cut twice: report it, never ask the same again
                state["budget"], state["raised"] = budget * 2, True
                self.stats.budget_raises += 1
                continue
            try:
                result = parse(text)
            except TeacherReplyError as e:
                n_malformed += 1
                self._count_malformed(e, kind, qid, text, finish)
                last = e
                errors.append(f"malformed reply ({e.code}): {e}")
                continue
            if self.cache is not None:
                self.cache.put(key, {"model": self.model_id, "messages": messages, "sampling": self.sampling,
                                     "seed": seed, "reply": text, "teacher": self.name})
            return result
        self.stats.failures += 1
        summary = f"{self.name}: gave up after {len(errors)} attempt(s): " + "; ".join(errors[-3:])
        if isinstance(last, TeacherReplyError):
            raise TeacherReplyError(summary, last.code) from last
        status = last.status if isinstance(last, TeacherRequestError) else None
        raise TeacherRequestError(summary, status=status, retryable=False) from last

    def _count_malformed(self, e: TeacherReplyError, kind: str, qid: str, text: str, finish: str | None) -> None:
        self.stats.malformed += 1
        self.stats.reply_errors[e.code] += 1
        self._reject(kind, qid, text, e.code, str(e), finish)

    async def _before_retry(self, attempt: int, error: TeacherError | None) -> None:
        """Hook: wait before retry number ``attempt`` (1-based)."""

    async def _attempt(self, kind: str, messages: list[dict[str, str]], seed: int,
                       state: dict[str, Any]) -> tuple[str, str | None]:
        raise TeacherError(f"{type(self).__name__} does not implement _attempt")


class OpenAITeacher(_ChatTeacher):
    """A teacher behind one or more OpenAI-compatible endpoints (OpenAI, vLLM, SGLang, a local server).

    Args:
        base_urls: endpoints serving the same model, e.g. ``["http://10.0.0.1:8000/v1", ...]``.
        model: model name sent with each request.
        api_key: sent as a bearer token; when None, ``$OPENAI_API_KEY`` or else "EMPTY" (vLLM ignores it).
        concurrency: most requests in flight at once, over all URLs.
        timeout: seconds per request before it counts as a timeout.
        max_retries: retries per call after the first attempt (timeouts, connection errors, 429, 5xx,
            malformed replies). Other 4xx fail at once.
        backoff: first retry delay in seconds; doubles each retry (with jitter), capped at ``max_backoff``.
        cache_dir: folder of the reply cache; None disables it.
        temperature, max_tokens: sampling parameters (part of the cache key); a reply cut at
            ``max_tokens`` is retried once with twice the budget.
        output: "json_schema" (the reply's JSON Schema), "json_object", "text" (no response_format), or
            "auto": json_schema, falling back to json_object then text when the server rejects it.
        rejects_path: JSONL file where unusable replies are appended with the reason and the raw text.
        send_seed: send the call's seed with the request (vLLM, SGLang and OpenAI accept it).
        breaker_failures, breaker_seconds: a URL failing this many requests in a row is benched this
            long (doubling while it keeps failing) unless every URL is benched.
        json_mode: deprecated alias of ``output="json_object"``.
    """

    def __init__(self, base_urls: list[str] | str, model: str, api_key: str | None = None, concurrency: int = 8,
                 timeout: float = 60, max_retries: int = 4, backoff: float = 0.5,
                 cache_dir: str | Path | None = None, temperature: float = 0.7, max_tokens: int = 4096, *,
                 output: str = "auto", rejects_path: str | Path | None = None,
                 name: str | None = None, max_backoff: float = 30.0, send_seed: bool = True,
                 breaker_failures: int = 3, breaker_seconds: float = 30.0,
                 json_mode: bool = False, max_reference_steps: int = 8) -> None:
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError("base_urls is empty; give at least one OpenAI-compatible endpoint URL")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if json_mode:
            output = "json_object"
        if output not in OUTPUT_MODES:
            raise ValueError(f"output must be one of {list(OUTPUT_MODES)}, got {output!r}")
        if breaker_failures < 1 or breaker_seconds < 0:
            raise ValueError(f"need breaker_failures >= 1 and breaker_seconds >= 0, got {breaker_failures}, "
                             f"{breaker_seconds}")
        sampling: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens}
        super().__init__(name or f"openai:{model}", model, sampling, max_retries, cache_dir, max_reference_steps,
                         rejects_path)
        self.base_urls = [u.rstrip("/") for u in urls]
        self.model = model
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.concurrency = concurrency
        self.timeout = timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.send_seed = send_seed
        self.output = output
        self.mode = "json_schema" if output == "auto" else output  # the mode requests use now
        self.stats.output_modes.append(self.mode)
        self.breaker_failures = breaker_failures
        self.breaker_seconds = breaker_seconds
        self.in_flight = [0] * len(self.base_urls)
        self.fails_in_row = [0] * len(self.base_urls)
        self.benched_until = [0.0] * len(self.base_urls)
        self._trips = [0] * len(self.base_urls)
        self._rr = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: list[Any] = []
        self._semaphore: asyncio.Semaphore | None = None

    def _bind(self) -> None:
        """Clients and semaphore belong to one event loop: (re)create them for the running one."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        from openai import AsyncOpenAI

        self._loop = loop
        # retries are ours (failover across URLs, counted), so the client's own are off
        self._clients = [AsyncOpenAI(base_url=u, api_key=self.api_key, timeout=self.timeout, max_retries=0)
                         for u in self.base_urls]
        self._semaphore = asyncio.Semaphore(self.concurrency)

    def _pick(self, avoid: int | None) -> int:
        """Least busy healthy URL, ties broken round-robin; ``avoid`` (the URL that just failed) only if
        alone; benched URLs only when every URL is benched (then the one back soonest)."""
        n = len(self.base_urls)
        now = time.monotonic()
        order = [(self._rr + k) % n for k in range(n)]
        if avoid is not None and n > 1:
            order.remove(avoid)
        healthy = [i for i in order if self.benched_until[i] <= now]
        if healthy:
            idx = min(healthy, key=lambda i: self.in_flight[i])
        else:
            idx = min(order, key=lambda i: self.benched_until[i])
        self._rr = (idx + 1) % n
        return idx

    def _health(self, idx: int, ok: bool) -> None:
        """Circuit breaker bookkeeping after a request to URL ``idx``."""
        if ok:
            self.fails_in_row[idx] = 0
            self._trips[idx] = 0
            return
        self.fails_in_row[idx] += 1
        if self.fails_in_row[idx] >= self.breaker_failures:
            self._trips[idx] += 1
            span = min(self.breaker_seconds * 2 ** (self._trips[idx] - 1), 10 * max(self.breaker_seconds, 1.0))
            self.benched_until[idx] = time.monotonic() + span
            self.stats.benched[self.base_urls[idx]] += 1

    def _downgrade(self, message: str) -> bool:
        """With output "auto", step down from a structured-output mode the server rejected; False when
        there is nothing to step down to (or the error is not about structured output)."""
        if self.output != "auto" or self.mode == "text":
            return False
        low = message.lower()
        if not any(w in low for w in ("response_format", "json_schema", "json_object", "schema", "guided",
                                       "structured", "grammar")):
            return False
        self.mode = "json_object" if self.mode == "json_schema" else "text"
        self.stats.output_modes.append(self.mode)
        return True

    async def _before_retry(self, attempt: int, error: TeacherError | None) -> None:
        delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.75, 1.25)
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff))
        await asyncio.sleep(delay)

    async def _attempt(self, kind: str, messages: list[dict[str, str]], seed: int,
                       state: dict[str, Any]) -> tuple[str, str | None]:
        import openai

        self._bind()
        assert self._semaphore is not None
        async with self._semaphore:
            while True:
                idx = self._pick(state.get("failed"))
                url = self.base_urls[idx]
                kwargs: dict[str, Any] = dict(self.sampling)
                kwargs["max_tokens"] = state.get("budget", kwargs["max_tokens"])
                fmt = response_format(kind, self.mode)
                if fmt is not None:
                    kwargs["response_format"] = fmt
                if self.send_seed:
                    kwargs["seed"] = seed
                self.in_flight[idx] += 1
                self.stats.requests += 1
                self.stats.per_url[url] += 1
                try:
                    async with asyncio.timeout(self.timeout * 1.5):  # a hard bound over the client's own
                        resp = await self._clients[idx].chat.completions.create(
                            model=self.model, messages=messages, **kwargs)
                except (openai.APITimeoutError, TimeoutError) as e:
                    raise self._failed(state, idx, "timeout", f"{url}: timed out after {self.timeout}s", e) from e
                except openai.APIConnectionError as e:
                    raise self._failed(state, idx, "connection", f"{url}: connection error: {e}", e) from e
                except openai.APIStatusError as e:
                    code = e.status_code
                    if code in (400, 422, 501) and fmt is not None and self._downgrade(str(e.message)):
                        self.stats.request_errors[f"http_{code}_output_mode"] += 1
                        continue  # the same request in the next output mode; not a failure of the URL
                    retryable = code == 429 or code >= 500
                    err = self._failed(state, idx, f"http_{code}", f"{url}: HTTP {code}: {_short(e.message)}", e,
                                       status=code, retryable=retryable, health=retryable)
                    err.retry_after = _retry_after(e)  # type: ignore[attr-defined]
                    raise err from e
                except (openai.APIResponseValidationError, ValueError) as e:  # a 200 whose body is not JSON
                    raise self._failed(state, idx, "bad_response",
                                       f"{url}: unreadable response: {_short(str(e))}", e) from e
                finally:
                    self.in_flight[idx] -= 1
                break
        self._health(idx, True)
        if resp.usage is not None:
            self.stats.prompt_tokens += resp.usage.prompt_tokens or 0
            self.stats.completion_tokens += resp.usage.completion_tokens or 0
        if not getattr(resp, "choices", None):
            raise TeacherReplyError("reply has no choices", "empty")
        choice = resp.choices[0]
        content = choice.message.content
        finish = getattr(choice, "finish_reason", None)
        if not content and finish != "length":
            raise TeacherReplyError("reply message has no content", "empty")
        return content or "", finish

    def _failed(self, state: dict[str, Any], idx: int, reason: str, message: str, exc: BaseException,
                status: int | None = None, retryable: bool = True, health: bool = True) -> TeacherRequestError:
        self.stats.request_errors[reason] += 1
        state["failed"] = idx  # the next attempt goes elsewhere
        if health:
            self._health(idx, False)
        return TeacherRequestError(message, status=status, retryable=retryable)

    async def aclose(self) -> None:
        """Close the HTTP clients (of the loop they were made in)."""
        for c in self._clients:
            await c.close()
        self._clients, self._loop, self._semaphore = [], None, None

    async def __aenter__(self) -> OpenAITeacher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _short(text: str, n: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n] + "..."


def _retry_after(e: Any) -> float | None:
    try:
        value = e.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, ValueError):
        return None


class LocalTeacher(_ChatTeacher):
    """A teacher on a local transformers chat model (a ``save_pretrained`` folder, or a GGUF file in it).

    Calls that arrive together are generated as one left-padded batch (up to ``batch_size``) in a
    worker thread, so the event loop stays free. With sampling, an output depends on its batch-mates
    (one generator seed per batch); the cache makes reruns reproducible anyway.

    Args:
        model_dir: folder with the model, tokenizer and chat template.
        device: torch device ("cpu", "cuda", "cuda:1").
        max_new_tokens, temperature, top_p: sampling (part of the cache key); temperature 0 is greedy.
        max_retries: regenerations (with another seed) after a malformed reply.
        batch_size: most sequences generated at once.
        cache_dir: folder of the reply cache; None disables it.
        gguf_file: load ``model_dir/gguf_file`` (de-quantised by transformers) instead of a plain folder.
        dtype: torch dtype name for the weights ("float32", "bfloat16", ...).
        rejects_path: JSONL file where unusable replies are appended with the reason and the raw text.

    A reply that used its whole ``max_new_tokens`` without an end token has finish reason "length".
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", max_new_tokens: int = 512,
                 temperature: float = 0.7, *, top_p: float = 1.0, max_retries: int = 2, batch_size: int = 8,
                 cache_dir: str | Path | None = None, gguf_file: str | None = None, dtype: str = "float32",
                 name: str | None = None, max_reference_steps: int = 8,
                 rejects_path: str | Path | None = None) -> None:
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"model_dir {model_dir} is not a folder")
        if gguf_file is not None and not (model_dir / gguf_file).is_file():
            raise FileNotFoundError(f"GGUF file {model_dir / gguf_file} does not exist")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        model_id = f"local:{model_dir.resolve()}" + (f"/{gguf_file}" if gguf_file else "")
        sampling = {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens}
        super().__init__(name or f"local:{model_dir.name}", model_id, sampling, max_retries, cache_dir,
                         max_reference_steps, rejects_path, budget_key="max_new_tokens")
        self.model_dir = model_dir
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.batch_size = batch_size
        self.gguf_file = gguf_file
        self.dtype = dtype
        self.batches = 0  # generate() calls, for checking that batching happens
        self._model: Any = None
        self._tokenizer: Any = None
        self._load_lock = threading.Lock()
        self._gen_lock = threading.Lock()
        self._pending: list[tuple[list[dict[str, str]], int, int, asyncio.Future]] = []
        self._worker: asyncio.Task | None = None

    def load(self) -> tuple[Any, Any]:
        """Load (once) and return ``(model, tokenizer)``; the tokenizer pads on the left for batching."""
        with self._load_lock:
            if self._model is None:
                import torch
                from transformers import AutoModelForCausalLM, AutoTokenizer

                extra = {"gguf_file": self.gguf_file} if self.gguf_file else {}
                tok = AutoTokenizer.from_pretrained(self.model_dir, **extra)
                if tok.chat_template is None:
                    raise ValueError(f"{self.model_dir}: the tokenizer has no chat template; LocalTeacher needs a chat model")
                tok.padding_side = "left"
                if tok.pad_token is None:
                    tok.pad_token = tok.eos_token
                model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=getattr(torch, self.dtype), **extra)
                self._model, self._tokenizer = model.to(self.device).eval(), tok
        return self._model, self._tokenizer

    def chat(self, conversations: list[list[dict[str, str]]], seed: int = 0,
             max_new_tokens: int | None = None) -> list[str]:
        """Generate one reply per conversation in one batch (blocking); special tokens are stripped.

        Public so that a test or a tiny server can put this model behind another interface.
        """
        return [text for text, _ in self.generate(conversations, seed, max_new_tokens)]

    def generate(self, conversations: list[list[dict[str, str]]], seed: int = 0,
                 max_new_tokens: int | None = None) -> list[tuple[str, str]]:
        """Like `chat`, with each reply's finish reason: "stop", or "length" when the budget ran out."""
        import torch

        model, tok = self.load()
        prompts = [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sample = self.temperature > 0
        kwargs: dict[str, Any] = {"do_sample": sample, "max_new_tokens": max_new_tokens or self.max_new_tokens,
                                  "pad_token_id": tok.pad_token_id}
        if sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p)
        with self._gen_lock, torch.no_grad():
            torch.manual_seed(seed)
            out = model.generate(**enc, **kwargs)
            self.batches += 1
        new = out[:, enc["input_ids"].shape[1]:]
        self.stats.requests += len(conversations)
        self.stats.prompt_tokens += int(enc["attention_mask"].sum())
        lengths = (new != tok.pad_token_id).sum(dim=1).tolist()
        self.stats.completion_tokens += int(sum(lengths))
        gen_eos = model.generation_config.eos_token_id
        eos = set(gen_eos if isinstance(gen_eos, list) else [gen_eos]) | {tok.eos_token_id}
        finishes = ["stop" if any(int(t) in eos for t in row) or n < kwargs["max_new_tokens"] else "length"
                    for row, n in zip(new, lengths, strict=True)]
        return list(zip(tok.batch_decode(new, skip_special_tokens=True), finishes, strict=True))

    async def _attempt(self, kind: str, messages: list[dict[str, str]], seed: int,
                       state: dict[str, Any]) -> tuple[str, str | None]:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.append((messages, seed, int(state.get("budget", self.max_new_tokens)), fut))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        """Generate pending requests batch by batch until none are left."""
        await asyncio.sleep(0.01)  # let the calls gathered with this one queue up
        while self._pending:
            batch, self._pending = self._pending[: self.batch_size], self._pending[self.batch_size:]
            batch = [b for b in batch if not b[3].done()]  # callers cancelled meanwhile need nothing
            if not batch:
                continue
            try:
                replies = await asyncio.to_thread(self.generate, [m for m, _, _, _ in batch],
                                                  min(s for _, s, _, _ in batch), max(b for _, _, b, _ in batch))
            except Exception as e:  # a broken model fails every call in the batch, loudly
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(TeacherRequestError(f"{self.name}: generation failed: {e!r}",
                                                              retryable=False))
                continue
            for (*_, fut), reply in zip(batch, replies, strict=True):
                if not fut.done():
                    fut.set_result(reply)
