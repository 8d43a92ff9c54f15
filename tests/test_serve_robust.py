"""Hostile and unusual requests against a live `steiner serve` on loopback: never a 5xx, always an
OpenAI-style error naming the field, and the server keeps serving."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NAME = "tiny"


@pytest.fixture(scope="module")
def live(tiny_model_dir):
    import torch

    from steiner.serve import ServeConfig, create_app
    from steiner.serve.background import BackgroundServer

    torch.set_num_threads(1)
    # a small default max_tokens keeps the generated requests that are valid quick
    cfg = ServeConfig(model=str(tiny_model_dir), served_model_name=NAME, max_tokens=4, max_batch_size=8)
    srv = BackgroundServer(create_app(cfg), startup_timeout=30).start()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def http(live):
    import httpx

    with httpx.Client(base_url=live.base_url, timeout=60) as c:
        yield c


def post(http, body=None, *, raw: bytes | None = None):
    content = raw if raw is not None else json.dumps(body).encode()  # ensure_ascii: surrogates travel as \ud800
    return http.post("/chat/completions", content=content, headers={"Content-Type": "application/json"})


SEEN: Counter = Counter()  # status codes the generated bodies got


def check_response(r) -> dict | None:
    """Assert a 2xx or a 4xx with an OpenAI-style JSON error; return the error (None on success)."""
    SEEN[r.status_code] += 1
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 400:
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and isinstance(err["message"], str) and err["message"]
        return err
    if r.headers["content-type"].startswith("text/event-stream"):
        events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert all("error" not in json.loads(e) for e in events[:-1])
    else:
        assert r.json()["object"] == "chat.completion" and r.json()["choices"]
    return None


def error_of(http, body=None, raw=None) -> dict:
    r = post(http, body, raw=raw)
    err = check_response(r)
    assert err is not None and r.status_code == 400, r.text[:300]
    return err


MSGS = [{"role": "user", "content": "hi"}]


def test_the_three_reported_500s_are_400s_naming_the_field(http):
    assert error_of(http, {"model": NAME, "messages": MSGS, "seed": 2**70})["param"] == "seed"
    assert error_of(http, {"model": NAME, "messages": MSGS, "seed": -(2**63) - 1})["param"] == "seed"
    err = error_of(http, {"model": NAME, "messages": [{"role": "user", "content": "a\x00b\ud800c"}]})
    assert err["param"] == "messages[0].content" and "surrogate" in err["message"]
    assert "nests deeper" in error_of(http, raw=b"[" * 100_000 + b"]" * 100_000)["message"]
    # at the edges of the int64 range a seed works (n=2 seeds seed and seed + 1)
    for seed in (2**63 - 1, -(2**63)):
        r = post(http, {"model": NAME, "messages": MSGS, "seed": seed, "n": 2})
        assert r.status_code == 200 and len(r.json()["choices"]) == 2
    # NUL is valid text: answered
    assert post(http, {"model": NAME, "messages": [{"role": "user", "content": "a\x00b"}]}).status_code == 200


def test_other_edge_inputs(http):
    assert "not valid JSON" in error_of(http, raw=b'{"seed": ' + b"9" * 5000 + b"}")["message"]
    assert "UTF-8" in error_of(http, raw=b'{"model": "\xff"}')["message"]
    assert error_of(http, {"model": NAME, "messages": MSGS, "temperature": 10**400})["param"] == "temperature"
    assert error_of(http, {"model": NAME, "messages": MSGS, "max_tokens": 10**40})["param"] == "max_tokens"
    assert error_of(http, {"model": "\ud800", "messages": MSGS})["param"] == "model"
    assert error_of(http, {"model": NAME, "messages": MSGS, "stop": ["\udfff"]})["param"] == "stop[0]"
    steps = [{"summary": {"nested": [1]}}]
    err = error_of(http, {"model": NAME, "messages": [*MSGS, {"role": "assistant", "content": "x", "steps": steps},
                                                      *MSGS]})
    assert err["param"] == "messages[1].steps[0].summary"
    assert error_of(http, {"model": NAME, "messages": MSGS, "stream_options": {"include_usage": "yes"}})["param"] == (
        "stream_options.include_usage")


# ---- generated bodies: valid ones, valid ones with one field replaced by any JSON, and any JSON ----------
json_scalars = st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats(allow_nan=False) | st.text(
    alphabet=st.characters(codec=None, exclude_categories=()), max_size=20)
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
    st.text(max_size=8), kids, max_size=3), max_leaves=10)
texts = st.text(alphabet=st.characters(exclude_categories=()), max_size=30)  # NUL and lone surrogates included
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool"])},
    optional={"content": texts | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": texts}),
                                           max_size=2),
              "reasoning_content": texts,
              "steps": st.lists(st.fixed_dictionaries({}, optional={
                  "name": texts, "summary": texts, "decision": st.sampled_from(["proceed", "backtrack", "end"]),
                  "returns_to": st.integers(0, 3)}), max_size=2)})
small_int = st.integers(0, 8)
fields = {
    "model": st.just(NAME),
    "messages": st.lists(message, min_size=1, max_size=3),
    "max_tokens": st.integers(1, 6) | st.integers(10**6, 2**70),
    "max_completion_tokens": st.integers(1, 6),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "n": st.integers(1, 3) | st.integers(-5, 100),
    "seed": st.integers(-(2**70), 2**70),
    "stop": texts | st.lists(texts, max_size=3),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}),
    "logprobs": st.booleans(),
    "top_logprobs": small_int | st.integers(-3, 40),
    "min_steps": small_int,
    "max_steps": small_int,
    "max_reasoning_tokens": st.integers(1, 40),
    "format_strict": st.booleans(),
    "ignore_eos": st.booleans(),
    "tools": st.just([]),
    "response_format": st.just({"type": "text"}),
    "logit_bias": st.just({}),
    "user": st.text(max_size=5),
    "an_unknown_field": json_values,
}
required = ("model", "messages")
valid_bodies = st.fixed_dictionaries({k: fields[k] for k in required},
                                     optional={k: v for k, v in fields.items() if k not in required})
one_bad_field = st.tuples(valid_bodies, st.sampled_from(sorted(fields)), json_values).map(
    lambda t: {**t[0], t[1]: t[2]})
bodies = st.one_of(valid_bodies, one_bad_field, json_values)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(body=bodies)
def test_generated_bodies_get_2xx_or_a_json_4xx(http, body):
    check_response(post(http, body))


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(raw=st.binary(max_size=64) | st.text(max_size=64).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_generated_raw_bytes_get_a_json_4xx(http, raw):
    check_response(post(http, raw=raw))


def test_the_server_still_answers_after_the_storm(http):
    if SEEN:  # the generated bodies reached both sides: answers and errors
        assert SEEN[200] >= 30 and SEEN[400] >= 50, SEEN
    r = post(http, {"model": NAME, "messages": MSGS, "max_tokens": 5, "ignore_eos": True})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 5
