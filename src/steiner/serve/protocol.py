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
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(max_tokens=0))

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


def _number(body: dict, name: str, default: Any, *, lo: float | None = None, hi: float | None = None,
            integer: bool = False, lo_open: bool = False) -> Any:
    value = body.get(name)
    if value is None:
        return default
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not float(value).is_integer()):
        raise APIError(f"{name} must be {kind}, got {value!r}", param=name)
    if isinstance(value, float) and not math.isfinite(value):
        raise APIError(f"{name} must be finite, got {value!r}", param=name)
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise APIError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value!r}", param=name)
    if hi is not None and value > hi:
        raise APIError(f"{name} must be <= {hi}, got {value!r}", param=name)
    return int(value) if integer else float(value)


def _bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise APIError(f"{name} must be true or false, got {value!r}", param=name)
    return value


def _text(content: Any, where: str) -> str:
    """Message content as text: a string, or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise APIError(f"{where}[{i}] must be a text part {{'type': 'text', 'text': ...}}", param=f"{where}[{i}]")
            parts.append(part["text"])
        return "".join(parts)
    raise APIError(f"{where} must be a string or a list of text parts, got {type(content).__name__}", param=where)


def recover_steps(message: dict, memory: StepsMemory | None, where: str) -> list[dict] | None:
    """The steps of an earlier assistant turn, or None when it carries no reasoning."""
    steps = message.get("steps")
    if steps is not None:
        if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
            raise APIError(f"{where}.steps must be a list of step objects", param=f"{where}.steps")
        return steps
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if not reasoning:
        return None
    if not isinstance(reasoning, str):
        raise APIError(f"{where}.reasoning_content must be a string", param=f"{where}.reasoning_content")
    if REASONING_START in reasoning:
        return [step_to_dict(s) for s in parse(reasoning).steps]
    found = memory.get(reasoning) if memory is not None else None
    if found is not None:
        return found
    # readable reasoning we do not know (another server, or a restart): keep it as one summarised step
    return [{"name": "earlier reasoning", "thought": reasoning, "summary": reasoning, "reflection": "",
             "decision": "end", "returns_to": None}]


def parse_request(body: Any, *, served: set[str], max_n: int, memory: StepsMemory | None = None) -> ChatRequest:
    """Check a request body; raise `APIError` naming the first bad field."""
    if not isinstance(body, dict):
        raise APIError("the request body must be a JSON object", param=None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError("model is required (a string)", param="model")
    if model not in served:
        raise APIError(f"model {model!r} is not served here; available: {sorted(served)}", param="model",
                       code="model_not_found")
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
        if role not in ROLES:
            raise APIError(f"{where}.role must be one of {list(ROLES)}, got {role!r}", param=f"{where}.role")
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
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise APIError("stop must be a non-empty string or a list of them", param="stop")
    max_tokens = _number(body, "max_completion_tokens", None, lo=1, integer=True)
    if max_tokens is None:
        max_tokens = _number(body, "max_tokens", None, lo=1, integer=True)
    min_steps = _number(body, "min_steps", 0, lo=0, integer=True)
    max_steps = _number(body, "max_steps", None, lo=0, integer=True)
    if max_steps is not None and max_steps < min_steps:
        raise APIError(f"max_steps ({max_steps}) is below min_steps ({min_steps})", param="max_steps")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise APIError("stream_options must be an object", param="stream_options")
    return ChatRequest(
        model=model,
        messages=messages,
        stream=_bool(body, "stream", False),
        include_usage=bool(stream_options.get("include_usage", False)),
        max_tokens=max_tokens,
        sampling=SamplingParams(
            max_tokens=max_tokens or 0,
            temperature=_number(body, "temperature", 1.0, lo=0, hi=2),
            top_p=_number(body, "top_p", 1.0, lo=0, hi=1, lo_open=True),
            n=_number(body, "n", 1, lo=1, hi=max_n, integer=True),
            seed=_number(body, "seed", None, integer=True),
            stop=stop,
            min_steps=min_steps,
            max_steps=max_steps,
            max_reasoning_tokens=_number(body, "max_reasoning_tokens", None, lo=1, integer=True),
            format_strict=_bool(body, "format_strict", False),
            ignore_eos=_bool(body, "ignore_eos", False),
        ),
    )
