"""Read and check an OpenAI chat-completions request body; OpenAI-style errors that name the field.

Earlier assistant turns come back to us as ``content`` plus, optionally, ``reasoning_content`` (or
``reasoning``) or our own ``steps`` list. They are turned into the chat template's assistant message
(``{"content": answer, "steps": [step dicts]}``) so the template can collapse them to their summaries:
``steps`` are used as given; raw reasoning text (with its tokens) is parsed back with
`steiner.format.parse`; readable reasoning is looked up in the server's `StepsMemory`.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from steiner.format import REASONING_START, parse, step_to_dict
from steiner.serve.engine import SamplingParams

ROLES = ("system", "developer", "user", "assistant", "tool")


class APIError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400,
                 type: str = "invalid_request_error", code: str | None = None) -> None:  # noqa: A002
        super().__init__(message)
        self.message, self.param, self.status, self.type, self.code = message, param, status, type, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class ChatRequest:
    """A checked request: messages in template form plus the decoding settings."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None  # None: the rest of the context, decided once the prompt is rendered
    ignored: list[str] = field(default_factory=list)  # unknown body fields, named back in a response header
    # max_new_tokens here is max_tokens, or 1 until the server sets the rest of the context (prepare)
    sampling: SamplingParams = field(default_factory=SamplingParams)

    @property
    def n(self) -> int:
        return self.sampling.n


class StepsMemory:
    """A bounded map from reasoning text we answered with to its steps, for readable reasoning that
    clients send back in later turns (lost on restart; raw reasoning needs no memory)."""

    def __init__(self, size: int = 10000) -> None:
        self.size = size
        self._map: OrderedDict[str, list[dict]] = OrderedDict()

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha256(text.strip().encode()).hexdigest()

    def put(self, text: str, steps: list[dict]) -> None:
        k = self._key(text)
        self._map[k] = steps
        self._map.move_to_end(k)
        while len(self._map) > self.size:
            self._map.popitem(last=False)

    def get(self, text: str) -> list[dict] | None:
        return self._map.get(self._key(text))


INT64 = (-(2**63), 2**63 - 1)
MAX_LOGPROBS = 20

# OpenAI request fields we accept and ignore: they do not change what is generated
IGNORED_FIELDS = ("user", "metadata", "store", "service_tier", "parallel_tool_calls", "prompt_cache_key",
                  "safety_identifier")
# OpenAI request fields we do not implement: a 400 unless they hold their neutral value
UNSUPPORTED = {
    "tools": "tool calling", "tool_choice": "tool calling", "functions": "function calling",
    "function_call": "function calling", "response_format": "structured output (response_format)",
    "logit_bias": "logit_bias", "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
    "audio": "audio output", "modalities": "modalities other than text", "prediction": "predicted outputs",
    "web_search_options": "web search", "reasoning_effort": "reasoning_effort (use max_reasoning_tokens)",
}
_NEUTRAL: dict[str, tuple] = {
    "tools": ([],), "tool_choice": ("none",), "functions": ([],), "function_call": ("none",),
    "response_format": ({"type": "text"},), "logit_bias": ({},), "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0), "modalities": (["text"],),
}
KNOWN_FIELDS = frozenset({
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature", "top_p",
    "n", "seed", "stop", "logprobs", "top_logprobs", "min_steps", "max_steps", "max_reasoning_tokens",
    "format_strict", "ignore_eos", *IGNORED_FIELDS, *UNSUPPORTED,
})


def show(value: Any, limit: int = 60) -> str:
    """A short, ASCII-safe rendering of a client value for an error message."""
    if value is None or isinstance(value, bool | int | float | str):
        text = ascii(value) if not isinstance(value, int) or isinstance(value, bool) or abs(value) < 10**30 else (
            f"an integer of {len(str(abs(value)))} digits")
        return text if len(text) <= limit else text[: limit - 3] + "..."
    return f"a {type(value).__name__}" if not isinstance(value, list | dict) else (
        f"a list of {len(value)}" if isinstance(value, list) else "an object")


def _number(body: dict, name: str, default: Any, *, lo: float | None = None, hi: float | None = None,
            integer: bool = False, lo_open: bool = False) -> Any:
    value = body.get(name)
    if value is None:
        return default
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise APIError(f"{name} must be {kind}, got {show(value)}", param=name)
    if isinstance(value, float) and not math.isfinite(value):
        raise APIError(f"{name} must be finite, got {show(value)}", param=name)
    if integer and isinstance(value, float):
        if not value.is_integer():
            raise APIError(f"{name} must be {kind}, got {show(value)}", param=name)
        value = int(value)
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise APIError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {show(value)}", param=name)
    if hi is not None and value > hi:
        raise APIError(f"{name} must be <= {hi}, got {show(value)}", param=name)
    if integer:
        return int(value)
    try:
        return float(value)
    except OverflowError:
        raise APIError(f"{name} is out of range, got {show(value)}", param=name) from None


def _bool(body: dict, name: str, default: bool, where: str = "") -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise APIError(f"{where}{name} must be true or false, got {show(value)}", param=where + name)
    return value


def _string(value: str, where: str) -> str:
    """``value`` if it is valid Unicode text (no lone surrogates: the tokenizer cannot encode them)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise APIError(f"{where} is not valid Unicode: a lone surrogate {show(value[e.start:e.end])} at "
                       f"character {e.start}", param=where) from None
    return value


def _text(content: Any, where: str) -> str:
    """Message content as text: a string, or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return _string(content, where)
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise APIError(f"{where}[{i}] must be a text part {{'type': 'text', 'text': ...}}", param=f"{where}[{i}]")
            parts.append(_string(part["text"], f"{where}[{i}].text"))
        return "".join(parts)
    raise APIError(f"{where} must be a string or a list of text parts, got {type(content).__name__}", param=where)


def _step(s: Any, where: str) -> dict[str, Any]:
    """A step object of an earlier assistant turn, checked: text fields strings, a known decision."""
    if not isinstance(s, dict):
        raise APIError(f"{where} must be a step object", param=where)
    out: dict[str, Any] = {}
    for f in ("name", "thought", "summary", "reflection"):
        v = s.get(f)
        if v is not None and not isinstance(v, str):
            raise APIError(f"{where}.{f} must be a string, got {show(v)}", param=f"{where}.{f}")
        out[f] = _string(v or "", f"{where}.{f}")
    decision = s.get("decision", "end")
    if decision not in ("proceed", "backtrack", "end", None):
        raise APIError(f"{where}.decision must be proceed, backtrack or end, got {show(decision)}",
                       param=f"{where}.decision")
    out["decision"] = decision or "end"
    rt = s.get("returns_to")
    if rt is not None and (isinstance(rt, bool) or not isinstance(rt, int) or not 0 <= rt < 10**6):
        raise APIError(f"{where}.returns_to must be a step number or null, got {show(rt)}", param=f"{where}.returns_to")
    out["returns_to"] = rt
    return out


def recover_steps(message: dict, memory: StepsMemory | None, where: str) -> list[dict] | None:
    """The steps of an earlier assistant turn, or None when it carries no reasoning."""
    steps = message.get("steps")
    if steps is not None:
        if not isinstance(steps, list):
            raise APIError(f"{where}.steps must be a list of step objects", param=f"{where}.steps")
        return [_step(s, f"{where}.steps[{i}]") for i, s in enumerate(steps)]
    name = "reasoning_content" if message.get("reasoning_content") else "reasoning"
    reasoning = message.get(name)
    if not reasoning:
        return None
    if not isinstance(reasoning, str):
        raise APIError(f"{where}.{name} must be a string", param=f"{where}.{name}")
    _string(reasoning, f"{where}.{name}")
    if REASONING_START in reasoning:
        return [step_to_dict(s) for s in parse(reasoning).steps]
    found = memory.get(reasoning) if memory is not None else None
    if found is not None:
        return found
    # readable reasoning we do not know (another server, or a restart): keep it as one summarised step
    return [{"name": "earlier reasoning", "thought": reasoning, "summary": reasoning, "reflection": "",
             "decision": "end", "returns_to": None}]


def _unsupported(body: dict) -> None:
    """400 for an OpenAI feature we do not implement, unless the field holds its neutral value."""
    for name, what in UNSUPPORTED.items():
        value = body.get(name)
        if value is None or value in _NEUTRAL.get(name, ()):
            continue
        raise APIError(f"{name} is not supported by this server: {what} is not implemented", param=name,
                       code="unsupported_parameter")


def parse_request(body: Any, *, served: set[str], max_n: int, memory: StepsMemory | None = None) -> ChatRequest:
    """Check a request body; raise `APIError` naming the first bad field.

    Unknown fields are ignored and listed in ``ChatRequest.ignored`` (the server names them in the
    ``X-Steiner-Ignored-Fields`` response header); OpenAI features we lack (`UNSUPPORTED`) are a 400.
    """
    if not isinstance(body, dict):
        raise APIError("the request body must be a JSON object", param=None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError("model is required (a string)", param="model")
    if model not in served:
        raise APIError(f"model {show(model)} is not served here; available: {sorted(served)}", param="model",
                       code="model_not_found")
    _unsupported(body)
    msgs = body.get("messages")
    if msgs is None:
        raise APIError("messages is required", param="messages")
    if not isinstance(msgs, list) or not msgs:
        raise APIError("messages must be a non-empty list of messages", param="messages")
    messages: list[dict[str, Any]] = []
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise APIError(f"{where} must be an object with role and content", param=where)
        role = m.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise APIError(f"{where}.role must be one of {list(ROLES)}, got {show(role)}", param=f"{where}.role")
        content = _text(m.get("content"), f"{where}.content")
        if role == "assistant":
            messages.append({"role": "assistant", "content": content, "steps": recover_steps(m, memory, where)})
        else:
            messages.append({"role": "system" if role == "developer" else role, "content": content})
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 16:
        raise APIError("stop must be a non-empty string or a list of at most 16 of them", param="stop")
    for i, s in enumerate(stop):
        _string(s, f"stop[{i}]")
    max_tokens = _number(body, "max_completion_tokens", None, lo=1, integer=True)
    if max_tokens is None:
        max_tokens = _number(body, "max_tokens", None, lo=1, integer=True)
    min_steps = _number(body, "min_steps", 0, lo=0, hi=10**6, integer=True)
    max_steps = _number(body, "max_steps", None, lo=0, hi=10**6, integer=True)
    if max_steps is not None and max_steps < min_steps:
        raise APIError(f"max_steps ({max_steps}) is below min_steps ({min_steps})", param="max_steps")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise APIError("stream_options must be an object", param="stream_options")
    include_usage = _bool(stream_options, "include_usage", False, "stream_options.")
    logprobs = _bool(body, "logprobs", False)
    top_logprobs = _number(body, "top_logprobs", 0, lo=0, hi=MAX_LOGPROBS, integer=True)
    if top_logprobs and not logprobs:
        raise APIError("top_logprobs needs logprobs: true", param="top_logprobs")
    return ChatRequest(
        model=model,
        messages=messages,
        stream=_bool(body, "stream", False),
        include_usage=include_usage,
        max_tokens=max_tokens,
        ignored=sorted(k if isinstance(k, str) else str(k) for k in body if k not in KNOWN_FIELDS),
        sampling=SamplingParams(
            max_new_tokens=max_tokens or 1,
            temperature=_number(body, "temperature", 1.0, lo=0, hi=2),
            top_p=_number(body, "top_p", 1.0, lo=0, hi=1, lo_open=True),
            n=_number(body, "n", 1, lo=1, hi=max_n, integer=True),
            seed=_number(body, "seed", None, lo=INT64[0], hi=INT64[1], integer=True),
            stop=stop,
            min_steps=min_steps,
            max_steps=max_steps,
            max_reasoning_tokens=_number(body, "max_reasoning_tokens", None, lo=1, integer=True),
            format_strict=_bool(body, "format_strict", False),
            ignore_eos=_bool(body, "ignore_eos", False),
            logprobs=logprobs,
            top_logprobs=top_logprobs,
        ),
    )
