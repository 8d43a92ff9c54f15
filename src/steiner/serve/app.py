"""The OpenAI-compatible HTTP layer: /v1/chat/completions (SSE streaming or not), /v1/models, /health.

Reasoning goes in ``reasoning_content`` (and ``reasoning``, vLLM's newer name), the answer in
``content``, and ``usage.completion_tokens_details.reasoning_tokens`` counts completion tokens up to and
including ``<|reasoning_end|>``. Decoding runs in the continuous-batching `Engine`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from steiner.format import REASONING_END, parse, step_to_dict
from steiner.infer.reasoning_parser import split_text
from steiner.serve.config import ServeConfig
from steiner.serve.engine import Delta, Engine, EngineRequest, Failed, Finished, SamplingParams, request_id
from steiner.serve.protocol import APIError, ChatRequest, StepsMemory, parse_request

log = logging.getLogger(__name__)

MAX_JSON_DEPTH = 64


class ErrorSafeJSON(JSONResponse):
    """JSON with non-ASCII escaped, so no text (a lone surrogate echoed in an error) can fail to encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _depth(raw: bytes) -> int:
    """The deepest nesting of ``[``/``{`` outside strings (a linear scan; no recursion)."""
    depth = best = 0
    in_str = esc = False
    for b in raw:
        if in_str:
            if esc:
                esc = False
            elif b == 0x5C:
                esc = True
            elif b == 0x22:
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b in (0x5B, 0x7B):
            depth += 1
            best = max(best, depth)
        elif b in (0x5D, 0x7D):
            depth -= 1
    return best


def parse_json(raw: bytes) -> Any:
    """The request body as JSON; a 400 naming the problem when it is not JSON or nests too deep."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise APIError(f"the request body is not UTF-8: {e}", param=None) from None
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _depth(raw) > MAX_JSON_DEPTH:
        raise APIError(f"the request body nests deeper than {MAX_JSON_DEPTH} levels", param=None)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, or an integer beyond Python's digit limit
        raise APIError(f"the request body is not valid JSON: {e}", param=None) from None


class TokenBytes:
    """The text and UTF-8 bytes of single token ids (byte-level BPE pieces map back to their bytes), cached."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.added = {i: t.content for i, t in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items()}
        backend = getattr(tokenizer, "backend_tokenizer", None)
        decoder = type(getattr(backend, "decoder", None)).__name__ if backend is not None else ""
        self.byte_level = decoder == "ByteLevel"
        if self.byte_level:
            from transformers.convert_slow_tokenizer import bytes_to_unicode

            self.unbyte = {c: b for b, c in bytes_to_unicode().items()}
        self.cache: dict[int, tuple[str, list[int]]] = {}

    def __call__(self, token_id: int) -> tuple[str, list[int]]:
        if token_id not in self.cache:
            if token_id in self.added:
                raw = self.added[token_id].encode()
            elif self.byte_level:
                piece = self.tokenizer.convert_ids_to_tokens(token_id) or ""
                raw = bytes(self.unbyte.get(c, 0x3F) for c in piece)
            else:
                raw = self.tokenizer.decode([token_id], skip_special_tokens=False).encode()
            self.cache[token_id] = (raw.decode("utf-8", errors="replace"), list(raw))
        return self.cache[token_id]

    def content(self, entries: list) -> list[dict[str, Any]]:
        """OpenAI's ``logprobs.content`` for engine log-prob entries."""
        out = []
        for tok, lp, top in entries:
            text, raw = self(tok)
            out.append({"token": text, "logprob": lp, "bytes": raw, "top_logprobs": [
                {"token": self(i)[0], "logprob": v, "bytes": self(i)[1]} for i, v in top]})
        return out


def render_prompt(tokenizer: Any, messages: list[dict]) -> list[int]:
    """Prompt ids for the next assistant turn; the chat template collapses every earlier assistant turn
    to its step summaries."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def load(cfg: ServeConfig) -> tuple[Any, Any]:
    """Model and tokenizer from ``cfg.model`` (errors name the path), on ``cfg.device``, in eval mode."""
    import torch

    from steiner.tokenizer import load_model, load_tokenizer

    if not cfg.model:
        raise ValueError("--model is required: a save_pretrained folder")
    tok = load_tokenizer(cfg.tokenizer or cfg.model)
    kwargs = {} if cfg.dtype == "auto" else {"dtype": getattr(torch, cfg.dtype)}
    model = load_model(cfg.model, **kwargs)
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tok


class _Server:
    """State shared by the routes: engine, tokenizer, reasoning parser, names, memory of steps."""

    def __init__(self, cfg: ServeConfig, model: Any, tokenizer: Any) -> None:
        from steiner.infer.reasoning_parser import SteinerReasoningParser

        self.cfg = cfg
        self.tokenizer = tokenizer
        self.parser = SteinerReasoningParser(tokenizer)
        self.token_bytes = TokenBytes(tokenizer)
        self.engine = Engine(model, tokenizer, max_batch_size=cfg.max_batch_size, batch_wait_ms=cfg.batch_wait_ms)
        self.name = cfg.served_model_name or (Path(cfg.model).name if cfg.model else "steiner")
        self.served = {self.name, cfg.model} - {""}
        self.memory = StepsMemory()
        self.created = int(time.time())

    def reasoning_text(self, raw_reasoning: str) -> str:
        """What ``reasoning_content`` holds for a raw reasoning text, per ``cfg.reasoning_format``."""
        if self.cfg.reasoning_format == "raw" or not raw_reasoning:
            return raw_reasoning
        from steiner.infer.pretty import format_reasoning

        pretty = format_reasoning(parse(raw_reasoning), show_problems=False).rsplit("\nAnswer:", 1)[0]
        self.memory.put(pretty, [step_to_dict(s) for s in parse(raw_reasoning).steps])
        return pretty

    def prepare(self, req: ChatRequest) -> tuple[list[int], SamplingParams]:
        """Prompt ids and sampling settings; context-length errors name the field."""
        ids = render_prompt(self.tokenizer, req.messages)
        limit = self.engine.max_len
        if len(ids) >= limit:
            raise APIError(f"the prompt is {len(ids)} tokens; this model's context is {limit} "
                           "(max_position_embeddings)", param="messages", code="context_length_exceeded")
        room = limit - len(ids)
        if req.max_tokens is not None and req.max_tokens > room:
            raise APIError(f"max_tokens ({req.max_tokens}) + prompt ({len(ids)} tokens) exceeds the context of "
                           f"{limit} tokens", param="max_tokens", code="context_length_exceeded")
        max_tokens = req.max_tokens or min(room, self.cfg.max_tokens or room)
        return ids, dataclasses.replace(req.sampling, max_new_tokens=max_tokens)

    def usage(self, prompt_len: int, finished: list[Finished]) -> dict[str, Any]:
        completion = sum(len(f.token_ids) for f in finished)
        reasoning = sum(self.parser.count_reasoning_tokens(f.token_ids) for f in finished)
        return {"prompt_tokens": prompt_len, "completion_tokens": completion, "total_tokens": prompt_len + completion,
                "completion_tokens_details": {"reasoning_tokens": reasoning}}


def _submit(server: _Server, ids: list[int], params: SamplingParams, stream: bool) -> tuple[EngineRequest, asyncio.Queue]:
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    req = EngineRequest(ids, params, emit=lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev), stream=stream)
    server.engine.submit(req)
    return req, events


async def _complete(server: _Server, req: ChatRequest, ids: list[int], params: SamplingParams,
                    request: Request | None = None) -> dict[str, Any]:
    ereq, events = _submit(server, ids, params, stream=False)
    finished: dict[int, Finished] = {}
    try:
        while len(finished) < params.n:
            try:
                ev = await asyncio.wait_for(events.get(), timeout=0.25)
            except TimeoutError:  # a client that hung up frees its rows in the batch
                if request is not None and await request.is_disconnected():
                    raise APIError("the client disconnected", status=499, code="client_closed") from None
                continue
            if isinstance(ev, Failed):
                raise APIError(ev.message, status=500, type="server_error")
            if isinstance(ev, Finished):
                finished[ev.index] = ev
    finally:
        ereq.cancelled.set()
    choices = []
    for i in range(params.n):
        f = finished[i]
        raw, content = server.parser.extract_reasoning_content(f.text)
        reasoning = server.reasoning_text(raw or "")
        choices.append({
            "index": i,
            "message": {"role": "assistant", "content": content or "", "reasoning_content": reasoning or None,
                        "reasoning": reasoning or None},
            "finish_reason": f.finish_reason,
            "logprobs": {"content": server.token_bytes.content(f.logprobs), "refusal": None}
            if f.logprobs is not None else None,
        })
    return {"id": request_id(), "object": "chat.completion", "created": int(time.time()), "model": req.model,
            "choices": choices, "usage": server.usage(len(ids), list(finished.values()))}


def _coalesce(events: list[Any]) -> list[Any]:
    """Merge the text deltas of each choice into its first one (a choice's Finished always comes after
    all its deltas, so the merged order stays valid)."""
    out: list[Any] = []
    first: dict[int, int] = {}
    for ev in events:
        if isinstance(ev, Delta) and ev.index in first:
            k = first[ev.index]
            lps = None if ev.logprobs is None else (out[k].logprobs or []) + ev.logprobs
            out[k] = Delta(ev.index, out[k].text + ev.text, lps)
        else:
            if isinstance(ev, Delta):
                first[ev.index] = len(out)
            out.append(ev)
    return out


async def _stream(server: _Server, req: ChatRequest, ids: list[int], params: SamplingParams):
    """SSE chunks: a role chunk per choice, token-level reasoning/content deltas, a finish chunk per choice,
    then (with ``stream_options.include_usage``) a usage chunk, then ``[DONE]``."""
    ereq, events = _submit(server, ids, params, stream=True)
    cid, created = request_id(), int(time.time())

    def chunk(choices: list[dict], usage: dict | None = None) -> str:
        body: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": req.model,
                                "choices": choices}
        if req.include_usage:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"

    texts = ["" for _ in range(params.n)]
    pretty = server.cfg.reasoning_format == "pretty"
    pretty_sent: set[int] = set()  # pretty reasoning goes out whole, once the reasoning has ended
    finished: dict[int, Finished] = {}
    try:
        for i in range(params.n):
            yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                          "finish_reason": None}])
        pending: list[Any] = []
        while len(finished) < params.n:
            if not pending:
                pending.append(await events.get())
                while not events.empty():  # coalesce what piled up while the client was slower than decoding
                    pending.append(events.get_nowait())
                pending = _coalesce(pending)
            ev = pending.pop(0)
            if isinstance(ev, Failed):
                err = {"error": {"message": ev.message, "type": "server_error", "param": None, "code": None}}
                yield f"data: {json.dumps(err)}\n\n"
                return
            if isinstance(ev, Delta):
                prev, texts[ev.index] = texts[ev.index], texts[ev.index] + ev.text
                # the parser's split is prefix-monotone, so the new parts are the growth of each side
                (r0, c0), (r1, c1) = split_text(prev), split_text(texts[ev.index])
                delta: dict[str, Any] = {}
                if r1[len(r0):] and not pretty:
                    delta["reasoning_content"] = delta["reasoning"] = r1[len(r0):]
                if pretty and ev.index not in pretty_sent and REASONING_END in texts[ev.index]:
                    pretty_sent.add(ev.index)
                    raw, _ = server.parser.extract_reasoning_content(texts[ev.index])
                    delta["reasoning_content"] = delta["reasoning"] = server.reasoning_text(raw or "")
                if c1[len(c0):]:
                    delta["content"] = c1[len(c0):]
                lps = {"content": server.token_bytes.content(ev.logprobs), "refusal": None} if ev.logprobs else None
                if delta or lps:
                    yield chunk([{"index": ev.index, "delta": delta, "logprobs": lps, "finish_reason": None}])
            elif isinstance(ev, Finished):
                finished[ev.index] = ev
                delta = {}
                if pretty and ev.index not in pretty_sent:
                    raw, _ = server.parser.extract_reasoning_content(ev.text)
                    if raw:
                        delta["reasoning_content"] = delta["reasoning"] = server.reasoning_text(raw)
                yield chunk([{"index": ev.index, "delta": delta, "logprobs": None, "finish_reason": ev.finish_reason}])
        if req.include_usage:
            yield chunk([], server.usage(len(ids), list(finished.values())))
        yield "data: [DONE]\n\n"
    finally:
        ereq.cancelled.set()


def create_app(cfg: ServeConfig, model: Any = None, tokenizer: Any = None) -> FastAPI:
    """The FastAPI app serving ``model`` (loaded from ``cfg.model`` when not given)."""
    if model is None or tokenizer is None:
        model, tokenizer = load(cfg)
    server = _Server(cfg, model, tokenizer)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.engine.start()
        yield
        server.engine.stop()

    app = FastAPI(title="steiner", lifespan=lifespan)
    app.state.server = server

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return ErrorSafeJSON(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = APIError(str(exc.detail), status=exc.status_code, code=str(exc.status_code))
        return ErrorSafeJSON(err.body(), status_code=exc.status_code)

    async def require_key(scope: dict, receive: Any, send: Any, call: Any) -> None:
        """Pure ASGI middleware (not BaseHTTPMiddleware, which hides client disconnects from the routes)."""
        if scope["type"] == "http" and cfg.api_key and scope["path"].startswith("/v1"):
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            given = header[7:] if header.lower().startswith("bearer ") else ""
            if not secrets.compare_digest(given.encode(), cfg.api_key.encode()):
                err = APIError("missing or wrong API key (send Authorization: Bearer KEY)", status=401,
                               code="invalid_api_key")
                await ErrorSafeJSON(err.body(), status_code=401)(scope, receive, send)
                return
        await call(scope, receive, send)

    class _KeyMiddleware:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
            await require_key(scope, receive, send, self.inner)

    app.add_middleware(_KeyMiddleware)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": server.name}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": server.name, "object": "model", "created": server.created,
                                            "owned_by": "steiner", "max_model_len": server.engine.max_len}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        raw = await request.body()
        body = parse_json(raw)
        req = parse_request(body, served=server.served, max_n=cfg.max_batch_size, memory=server.memory)
        ids, params = server.prepare(req)
        headers = {"X-Steiner-Ignored-Fields": ",".join(req.ignored)[:1000].encode("ascii", "backslashreplace").decode()
                   } if req.ignored else None
        if req.stream:
            return StreamingResponse(_stream(server, req, ids, params), media_type="text/event-stream",
                                     headers=headers)
        return ErrorSafeJSON(await _complete(server, req, ids, params, request), headers=headers)

    return app


def main(cfg: ServeConfig) -> int:
    """`steiner serve`: load the model and serve it until interrupted (``--engine vllm``: vLLM's server)."""
    if cfg.engine == "vllm":
        from steiner.serve.vllm import run

        return run(cfg)
    import torch
    import uvicorn

    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    app = create_app(cfg)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level)
    return 0
