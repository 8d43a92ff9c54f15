"""The OpenAI-compatible server, end to end: a real uvicorn on loopback and the official `openai` client."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from steiner.format import REASONING_END, REASONING_START, parse

KEY = "sk-test-steiner"
NAME = "tiny"


def LiveServer(app):  # noqa: N802 - reads as the class it returns
    """uvicorn serving an app on 127.0.0.1:<free port> in a background thread (steiner's own helper)."""
    from steiner.serve.background import BackgroundServer

    return BackgroundServer(app, startup_timeout=30).start()


def start_server(model_dir, **overrides) -> LiveServer:
    import torch

    from steiner.serve import ServeConfig, create_app

    torch.set_num_threads(1)  # two shared cores: one intra-op thread avoids oversubscription stalls
    cfg = ServeConfig(model=str(model_dir), served_model_name=NAME, **overrides)
    return LiveServer(create_app(cfg))


@pytest.fixture(scope="module")
def live(tiny_model_dir):
    srv = start_server(tiny_model_dir, api_key=KEY)
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def client(live):
    from openai import OpenAI

    return OpenAI(base_url=live.base_url, api_key=KEY, max_retries=0, timeout=60)


def ask(client, content="What is 3 + 5?", **kw):
    kw.setdefault("max_tokens", 40)
    extra = {k: kw.pop(k) for k in ("min_steps", "max_steps", "max_reasoning_tokens", "format_strict", "ignore_eos")
             if k in kw}
    return client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": content}],
                                          extra_body=extra or None, **kw)


def reasoning_of(message) -> str | None:
    return (message.model_extra or {}).get("reasoning_content")


def test_health_models_and_api_key(live, client):
    import httpx
    import openai

    assert httpx.get(f"http://127.0.0.1:{live.port}/health").json()["status"] == "ok"
    assert [m.id for m in client.models.list().data] == [NAME]
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = httpx.get(f"{live.base_url}/models", headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
    from openai import OpenAI

    bad = OpenAI(base_url=live.base_url, api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        ask(bad)


def test_reasoning_content_usage_and_step_bounds(client):
    r = ask(client, max_tokens=200, seed=0, format_strict=True, min_steps=1, max_steps=2, max_reasoning_tokens=80)
    msg = r.choices[0].message
    reasoning = reasoning_of(msg)
    assert reasoning.startswith(REASONING_START) and reasoning.endswith(REASONING_END)
    assert msg.model_extra["reasoning"] == reasoning
    path = parse(reasoning + (msg.content or ""))
    assert 1 <= len(path.steps) <= 2 and path.complete
    details = r.usage.completion_tokens_details
    assert 0 < details.reasoning_tokens <= 80  # the budget holds, <|reasoning_end|> included
    assert r.usage.completion_tokens >= details.reasoning_tokens
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streaming_matches_non_streaming(client):
    kw = dict(max_tokens=60, seed=7, temperature=0.8)
    whole = ask(client, **kw)
    stream = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "What is 3 + 5?"}], stream=True,
        stream_options={"include_usage": True}, **kw)
    reasoning, content, finish, usage, chunks = "", "", None, None, 0
    for ch in stream:
        if ch.usage is not None:
            usage = ch.usage
        for c in ch.choices:
            chunks += 1
            extra = c.delta.model_extra or {}
            reasoning += extra.get("reasoning_content") or ""
            content += c.delta.content or ""
            finish = c.finish_reason or finish
    assert chunks > 2  # streamed in pieces, not one blob (a slow client gets merged deltas)
    assert reasoning == reasoning_of(whole.choices[0].message)
    assert content == (whole.choices[0].message.content or "")
    assert finish == whole.choices[0].finish_reason
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert usage.completion_tokens_details.reasoning_tokens == whole.usage.completion_tokens_details.reasoning_tokens


def test_sampling_parameters(client):
    a = ask(client, n=3, seed=11, max_tokens=30, ignore_eos=True)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert a.usage.completion_tokens == 90 and all(c.finish_reason == "length" for c in a.choices)
    b = ask(client, n=3, seed=11, max_tokens=30, ignore_eos=True)
    texts = [reasoning_of(c.message) for c in a.choices]
    assert texts == [reasoning_of(c.message) for c in b.choices]
    assert len(set(texts)) > 1  # the samples differ from each other
    g1, g2 = ask(client, temperature=0, max_tokens=25), ask(client, temperature=0, max_tokens=25, seed=5)
    assert reasoning_of(g1.choices[0].message) == reasoning_of(g2.choices[0].message)
    narrow = ask(client, top_p=1e-6, max_tokens=25, seed=3)  # top_p that keeps one token is greedy
    assert reasoning_of(narrow.choices[0].message) == reasoning_of(g1.choices[0].message)
    assert ask(client, max_completion_tokens=7, ignore_eos=True).usage.completion_tokens == 7
    # stop: cut at a string the same seeded sample is known to contain
    full = reasoning_of(ask(client, seed=21, max_tokens=40, ignore_eos=True).choices[0].message)
    stop = full[len(REASONING_START) + 6 : len(REASONING_START) + 9]
    cut = ask(client, seed=21, max_tokens=40, ignore_eos=True, stop=[stop]).choices[0]
    assert cut.finish_reason == "stop"
    assert reasoning_of(cut.message) == full[: full.index(stop)]


def _error(live, body, *, raw=None):
    import httpx

    r = httpx.post(f"{live.base_url}/chat/completions", headers={"Authorization": f"Bearer {KEY}",
                   "Content-Type": "application/json"}, content=raw, json=None if raw is not None else body)
    assert r.status_code in (400, 422), r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def test_bad_requests_name_the_field_and_the_server_keeps_serving(live, client):
    msgs = [{"role": "user", "content": "hi"}]
    assert "JSON" in _error(live, None, raw=b'{"model": "tiny", "messages": [')["message"]
    assert _error(live, {"model": "gpt-9", "messages": msgs})["param"] == "model"
    assert _error(live, {"model": NAME})["param"] == "messages"
    assert _error(live, {"model": NAME, "messages": msgs, "min_steps": -1})["param"] == "min_steps"
    err = _error(live, {"model": NAME, "messages": msgs, "min_steps": 4, "max_steps": 2})
    assert err["param"] == "max_steps" and "min_steps" in err["message"]
    assert _error(live, {"model": NAME, "messages": msgs, "temperature": "hot"})["param"] == "temperature"
    assert _error(live, {"model": NAME, "messages": [{"role": "wizard", "content": "x"}]})["param"] == "messages[0].role"
    long = [{"role": "user", "content": "reach 24 " * 3000}]  # far over 2048 positions
    err = _error(live, {"model": NAME, "messages": long})
    assert err["param"] == "messages" and err["code"] == "context_length_exceeded"
    assert _error(live, {"model": NAME, "messages": msgs, "max_tokens": 10**6})["param"] == "max_tokens"
    r = ask(client, max_tokens=5)
    assert r.choices[0].finish_reason in ("length", "stop")


def test_concurrent_requests_share_batches(live, client):
    server = live.server.config.app.state.server
    server.engine.max_rows_seen = 0
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: ask(client, seed=i, max_tokens=60, ignore_eos=True), range(8)))
    assert all(r.usage.completion_tokens == 60 for r in results)
    assert server.engine.max_rows_seen >= 4  # several clients decoded in one batch


def test_multi_turn_collapses_earlier_reasoning(live, client, tiny_tokenizer):
    from steiner.format import ReasoningPath, Step, render, step_to_dict
    from steiner.serve import render_prompt
    from steiner.serve.protocol import parse_request

    steps = [Step("add", "THOUGHT-ONE 3+5=8", "SUMMARY-ONE 8", "REFLECT-ONE", "proceed"),
             Step("check", "THOUGHT-TWO 8 ok", "SUMMARY-TWO done", "REFLECT-TWO", "end")]
    raw = render(ReasoningPath(steps, None if False else "8"))
    reasoning = raw[: raw.index(REASONING_END) + len(REASONING_END)]
    convo = [{"role": "user", "content": "3+5?"},
             {"role": "assistant", "content": "8", "reasoning_content": reasoning},
             {"role": "user", "content": "and times 2?"}]
    req = parse_request({"model": NAME, "messages": convo}, served={NAME}, max_n=4)
    assert req.messages[1]["steps"] == [step_to_dict(s) for s in steps]
    text = tiny_tokenizer.decode(render_prompt(tiny_tokenizer, req.messages))
    assert "SUMMARY-ONE" in text and "SUMMARY-TWO" in text
    assert "THOUGHT-ONE" not in text and "REFLECT-TWO" not in text
    assert text.endswith("<|im_start|>assistant\n")
    # the same conversation over HTTP, the earlier turn taken from a real answer
    first = ask(client, max_tokens=40, seed=2)
    convo[1] = {"role": "assistant", "content": first.choices[0].message.content,
                "reasoning_content": reasoning_of(first.choices[0].message)}
    r = client.chat.completions.create(model=NAME, messages=convo, max_tokens=20)
    assert r.usage.prompt_tokens > first.usage.prompt_tokens


def test_pretty_reasoning_is_readable_and_maps_back(tiny_model_dir):
    from openai import OpenAI

    srv = start_server(tiny_model_dir, reasoning_format="pretty")
    try:
        c = OpenAI(base_url=srv.base_url, api_key="unused", max_retries=0, timeout=60)
        r = ask(c, max_tokens=150, seed=4, format_strict=True, max_steps=2, max_reasoning_tokens=70)
        pretty = reasoning_of(r.choices[0].message)
        assert pretty.startswith("Step 1:") and "<|" not in pretty.split("\n")[0]
        server = srv.server.config.app.state.server
        steps = server.memory.get(pretty)
        assert steps and len(steps) <= 2
        stream = c.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "What is 3 + 5?"}],
                                           stream=True, max_tokens=150, seed=4,
                                           extra_body={"format_strict": True, "max_steps": 2, "max_reasoning_tokens": 70})
        streamed = "".join((ch.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
                           for ch in stream if ch.choices)
        assert streamed == pretty
    finally:
        srv.close()


def test_serve_command_runs_a_server(tiny_model_dir):
    """`steiner serve` as a user runs it: a separate process, the API key enforced, then stopped."""
    import os
    import signal
    import subprocess
    import sys

    import httpx
    from openai import OpenAI

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "steiner.cli", "serve", "--model", str(tiny_model_dir), "--port", str(port),
         "--api-key", KEY, "--served-model-name", NAME, "--torch-threads", "1", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + 180  # a loaded two-core machine can take a minute to import torch
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "steiner serve did not come up"
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
        c = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=60)
        r = ask(c, max_tokens=8, ignore_eos=True)
        assert r.usage.completion_tokens == 8
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_a_client_that_hangs_up_frees_its_rows(live, client):
    import httpx

    server = live.server.config.app.state.server
    body = {"model": NAME, "messages": [{"role": "user", "content": "go"}], "max_tokens": 1900, "ignore_eos": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    for stream in (False, True):
        steps = server.engine.steps
        if stream:  # read the first event, then hang up
            with httpx.stream("POST", f"{live.base_url}/chat/completions", json={**body, "stream": True},
                              headers=headers, timeout=10) as r:
                assert next(r.iter_lines()).startswith("data:")
        else:
            with pytest.raises(httpx.TimeoutException):
                httpx.post(f"{live.base_url}/chat/completions", json=body, headers=headers, timeout=0.3)
        deadline = time.monotonic() + 20
        while server.engine._rows and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not server.engine._rows
        assert server.engine.steps - steps < 1900  # dropped before its 1900 tokens were decoded
    assert ask(client, max_tokens=5).usage.completion_tokens > 0


def _ids_of(tokenizer, entries) -> list[int]:
    """Token ids back from logprobs entries (byte-level pieces, or added tokens by their text)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    to_char = bytes_to_unicode()
    added = {t.content: i for i, t in tokenizer.added_tokens_decoder.items()}
    return [added[e.token] if e.token in added else tokenizer.convert_tokens_to_ids("".join(to_char[b] for b in e.bytes))
            for e in entries]


def test_logprobs_are_the_models_own(live, client, tiny_model_dir):
    import torch

    from steiner.serve import render_prompt
    from steiner.tokenizer import load_model

    tiny_tokenizer = live.server.config.app.state.server.tokenizer  # as the server loaded it
    r = ask(client, max_tokens=12, seed=3, temperature=1.0, logprobs=True, top_logprobs=3, ignore_eos=True)
    choice = r.choices[0]
    entries = choice.logprobs.content
    assert len(entries) == r.usage.completion_tokens == 12
    raw = reasoning_of(choice.message) + (choice.message.content or "")
    assert "".join(e.token for e in entries) == raw  # one entry per token, in order
    ids = _ids_of(tiny_tokenizer, entries)
    prompt = render_prompt(tiny_tokenizer, [{"role": "user", "content": "What is 3 + 5?"}])
    model = load_model(tiny_model_dir).eval()
    with torch.no_grad():
        logits = model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1].float()
    expected = torch.log_softmax(logits[:, : len(tiny_tokenizer)], -1)
    for k, e in enumerate(entries):
        assert e.logprob == pytest.approx(float(expected[k, ids[k]]), abs=1e-3)
        top = [t.logprob for t in e.top_logprobs]
        assert len(top) == 3 and top == sorted(top, reverse=True)
        assert top[0] == pytest.approx(float(expected[k].max()), abs=1e-3)
    # streaming carries the same entries, chunk by chunk
    stream = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "What is 3 + 5?"}],
                                            stream=True, max_tokens=12, seed=3, logprobs=True, top_logprobs=3,
                                            extra_body={"ignore_eos": True})
    streamed = [e for ch in stream for c in ch.choices if c.logprobs for e in c.logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in entries]
    assert ask(client, max_tokens=3).choices[0].logprobs is None  # not asked: none


def test_unsupported_and_unknown_fields(live, client):
    import httpx

    msgs = [{"role": "user", "content": "hi"}]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    for field, value in (("tools", tools), ("response_format", {"type": "json_object"}), ("logit_bias", {"5": 3}),
                         ("presence_penalty", 0.5)):
        err = _error(live, {"model": NAME, "messages": msgs, field: value})
        assert err["param"] == field and "not supported" in err["message"] and err["code"] == "unsupported_parameter"
    assert _error(live, {"model": NAME, "messages": msgs, "top_logprobs": 2})["param"] == "top_logprobs"
    assert _error(live, {"model": NAME, "messages": msgs, "logprobs": True, "top_logprobs": 21})["param"] == (
        "top_logprobs")
    # neutral values of unsupported features, and fields that change nothing, are accepted
    ok = {"model": NAME, "messages": msgs, "max_tokens": 3, "tools": [], "response_format": {"type": "text"},
          "presence_penalty": 0, "user": "u1", "metadata": {"a": "b"}}
    r = httpx.post(f"{live.base_url}/chat/completions", json=ok, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and "x-steiner-ignored-fields" not in r.headers
    # unknown fields are ignored and named back in a header
    r = httpx.post(f"{live.base_url}/chat/completions", json={**ok, "frobnicate": 1, "best_of": 2},
                   headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and r.headers["x-steiner-ignored-fields"] == "best_of,frobnicate"


def test_format_strict_completions_finish_within_max_tokens(client):
    """An untrained model at temperature 1.5 with a system prompt: with format_strict every completion
    ends (finish_reason stop) inside max_tokens and parses with no problem."""
    messages = [{"role": "system", "content": "Be careful."}, {"role": "user", "content": "Reach 24 with 3 5 7 11."}]
    r = client.chat.completions.create(model=NAME, messages=messages, n=8, max_tokens=48, temperature=1.5, seed=5,
                                       extra_body={"format_strict": True})
    assert r.usage.completion_tokens <= 8 * 48
    for c in r.choices:
        path = parse(reasoning_of(c.message) + (c.message.content or ""))
        assert c.finish_reason == "stop" and path.ok and path.complete, [str(p) for p in path.problems]


def test_vllm_engine_command_wires_steiners_parser_and_processors(tmp_path):
    from steiner.serve import ServeConfig
    from steiner.serve.vllm import PROCESSORS, vllm_command, vllm_python

    cfg = ServeConfig(model=str(tmp_path), engine="vllm", api_key=KEY, served_model_name=NAME, port=9001,
                      max_batch_size=16, vllm_args="--max-model-len 512")
    cmd = vllm_command(cfg, "PY")
    assert cmd[:3] == ["PY", "-m", "vllm.entrypoints.openai.api_server"]
    i = cmd.index("--logits-processors")
    assert tuple(cmd[i + 1 : i + 3]) == PROCESSORS
    for flag, value in (("--reasoning-parser", "steiner"), ("--reasoning-parser-plugin", "steiner.infer.vllm_plugin"),
                        ("--api-key", KEY), ("--served-model-name", NAME), ("--port", "9001"), ("--max-num-seqs", "16"),
                        ("--max-model-len", "512")):
        assert cmd[cmd.index(flag) + 1] == value
    with pytest.raises(ValueError, match="pretty"):
        vllm_command(ServeConfig(model=str(tmp_path), engine="vllm", reasoning_format="pretty"), "PY")
    with pytest.raises(FileNotFoundError, match="vllm-python"):
        vllm_python(ServeConfig(model=str(tmp_path), engine="vllm", vllm_python=str(tmp_path / "nope")))
