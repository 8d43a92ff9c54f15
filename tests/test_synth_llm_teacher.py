"""OpenAITeacher against real loopback HTTP servers with the real `openai` client; LocalTeacher batching.

`ChatServer` is a small OpenAI-compatible chat-completions server (``http.server`` in a thread on
127.0.0.1, port 0) that answers like a scripted teacher and can be told to misbehave on a schedule:
429, 500, 400, hang past the client timeout, a non-JSON body, or a malformed teacher reply.
It records every request body and the most requests in flight at once (shared across servers).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from steiner.format import Step
from steiner.synth.llm_teacher import LocalTeacher, OpenAITeacher, TeacherRequestError
from steiner.synth.prompts import TeacherReplyError
from steiner.synth.teacher import Question, Revealed, Teacher


class InFlight:
    """Requests in flight now and at most, over every server that shares this tracker."""

    def __init__(self) -> None:
        self.now = 0
        self.max = 0
        self.lock = threading.Lock()

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.max = max(self.max, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def _step(name: str, thought: str) -> dict:
    return {"name": name, "thought": thought, "summary": f"{name} done.", "reflection": "On track."}


def scripted_reply(body: dict) -> str:
    """A well-formed teacher reply for whichever of the three prompts ``body`` carries.

    Thoughts quote the seed and the question line, so distinct requests get distinct replies.
    """
    user = body["messages"][-1]["content"]
    turn = user.split("Now your turn.", 1)[-1]
    tag = f"seed={body.get('seed')} q={turn.splitlines()[1] if len(turn.splitlines()) > 1 else ''}"
    if "Correct answer:" in turn:
        return json.dumps({"reflection": "Step 2 went wrong.", "returns_to": 1,
                           "steps": [_step("Retry", tag), _step("Finish", "so 42")], "final_answer": "42"})
    if "Answer:" in turn:
        return json.dumps({"steps": [_step("Start", tag), _step("Finish", "so 42")], "final_answer": "42"})
    return "```json\n" + json.dumps({"steps": [_step("Guess", tag), _step("Guess more", "maybe 41")]}) + "\n```"


class ChatServer:
    """A real OpenAI-compatible chat-completions server on loopback (see module docstring).

    ``schedule`` is consumed one action per request, then every request is answered normally:
    ``"ok"``, ``429``/``500``/``400`` (an HTTP error), ``"hang"`` (sleep ``hang_s``, longer than
    the client timeout), ``"garbage"`` (a 200 whose body is not JSON), ``("content", text)``
    (a 200 carrying ``text`` as the reply: malformed teacher replies) or ``"length"`` (the normal
    reply cut in half, with ``finish_reason: "length"``). A request whose ``response_format`` type
    is in ``reject_formats`` gets a 400 saying the server does not support it.
    """

    def __init__(self, schedule: list | None = None, reply: Callable[[dict], str] = scripted_reply,
                 delay: float = 0.0, hang_s: float = 3.0, tracker: InFlight | None = None,
                 always: object = None, reject_formats: tuple[str, ...] = ()) -> None:
        self.schedule = list(schedule or [])
        self.reject_formats = reject_formats
        self.always = always
        self.reply, self.delay, self.hang_s = reply, delay, hang_s
        self.tracker = tracker or InFlight()
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, payload: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.tracker.enter()
                try:
                    server.handle(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)
                finally:
                    server.tracker.leave()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def count(self) -> int:
        return len(self.bodies)

    def handle(self, h: BaseHTTPRequestHandler, body: dict) -> None:
        fmt = (body.get("response_format") or {}).get("type")
        if fmt in self.reject_formats:
            with self.lock:
                self.bodies.append(body)
            h._send(400, json.dumps({"error": {"message": f"response_format type {fmt} is not supported",
                                               "type": "BadRequestError"}}).encode())
            return
        with self.lock:
            self.bodies.append(body)
            action = self.schedule.pop(0) if self.schedule else (self.always or "ok")
        if self.delay:
            self.stop.wait(self.delay)
        if action == "hang":
            self.stop.wait(self.hang_s)
            action = "ok"
        if isinstance(action, int):
            h._send(action, json.dumps({"error": {"message": f"scripted {action}", "type": "x"}}).encode())
            return
        if action == "garbage":
            h._send(200, b"<html>this is not json</html>", "application/json")
            return
        text = action[1] if isinstance(action, tuple) else self.reply(body)
        finish = "stop"
        if action == "length":
            text, finish = text[: len(text) // 2], "length"
        payload = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                "finish_reason": finish}],
                   "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}}
        h._send(200, json.dumps(payload).encode())

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    made: list[ChatServer] = []

    def make(**kw) -> ChatServer:
        made.append(ChatServer(**kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


Q = Question(id="q1", question="Reach 24 with 3 4 6 1.", answer="(6/(1-3/4))")
PREFIX = [Step(name="Try 3*4", thought="3*4=12", summary="12", reflection="ok")]


def fast_teacher(urls, **kw) -> OpenAITeacher:
    kw = {"timeout": 0.4, "backoff": 0.01, "max_backoff": 0.05, "max_retries": 4, **kw}
    return OpenAITeacher(urls, "scripted-model", **kw)


def run(coro):
    return asyncio.run(coro)


def test_three_calls_parse_into_steps(servers):
    srv = servers()
    t = fast_teacher([srv.url], timeout=10)  # no timeout wanted here, even on a loaded machine
    assert isinstance(t, Teacher)

    async def go():
        async with t:
            return await t.reference(Q), await t.forward(Q, PREFIX, 2, seed=3), await t.reveal(Q, PREFIX, [PREFIX[0]], 5)

    (ref, answer), fwd, rev = run(go())
    assert [s.decision for s in ref] == ["proceed", "end"] and answer == "42"
    assert [s.decision for s in fwd] == ["proceed", "proceed"] and "seed=3" in fwd[0].thought
    assert isinstance(rev, Revealed) and rev.returns_to == 1 and rev.steps[-1].decision == "end"
    assert all(s.meta["teacher"] == "openai:scripted-model" for s in ref + fwd + rev.steps)
    assert srv.count == 3 and t.stats.requests == 3 and t.stats.retries == 0
    body = srv.bodies[1]
    assert body["model"] == "scripted-model" and body["seed"] == 3 and body["max_tokens"] == 4096
    # structured output: each call sends the JSON Schema of its own reply
    fmt = [b["response_format"] for b in srv.bodies]
    assert [f["type"] for f in fmt] == ["json_schema"] * 3
    assert [f["json_schema"]["name"] for f in fmt] == ["steiner_reference", "steiner_forward", "steiner_reveal"]
    assert fmt[2]["json_schema"]["schema"]["properties"]["returns_to"] == {"type": ["integer", "null"]}
    # the answer is hidden from forward, shown to reveal
    assert Q.answer not in json.dumps(srv.bodies[1]) and Q.answer in json.dumps(srv.bodies[2])


def test_second_run_with_the_cache_makes_no_request(servers, tmp_path):
    first, second = servers(), servers()

    async def calls(t):
        async with t:
            out = [await t.reference(Q)]
            out += await asyncio.gather(*(t.forward(Q, PREFIX, 2, seed=s) for s in range(4)))
            out.append(await t.reveal(Q, PREFIX, PREFIX, seed=0))
            return out

    t1 = fast_teacher([first.url], cache_dir=tmp_path / "cache")
    out1 = run(calls(t1))
    assert first.count == 6 and t1.stats.cache_hits == 0
    assert len(list((tmp_path / "cache").glob("*/*.json"))) == 6
    # another base URL, same model and requests: the cache key ignores the URL
    t2 = fast_teacher([second.url], cache_dir=tmp_path / "cache")
    out2 = run(calls(t2))
    assert second.count == 0 and t2.stats.requests == 0 and t2.stats.cache_hits == 6
    assert out1 == out2
    # a different seed is a different request
    run(t2.forward(Q, PREFIX, 2, seed=99))
    assert second.count == 1


def test_retries_429_500_and_timeouts(servers):
    srv = servers(schedule=[429, 500, "hang", "ok"])
    t = fast_teacher([srv.url])
    t0 = time.monotonic()
    steps = run(t.forward(Q, PREFIX, 2, seed=1))
    assert steps and time.monotonic() - t0 < 2.5  # the hang (3 s) was cut by the 0.4 s timeout
    assert srv.count == 4
    assert t.stats.retries == 3 and t.stats.failures == 0
    assert dict(t.stats.request_errors) == {"http_429": 1, "http_500": 1, "timeout": 1}


def test_gives_up_and_never_caches_a_failure(servers, tmp_path):
    srv = servers(schedule=[500, 502, 503])
    t = fast_teacher([srv.url], max_retries=2, cache_dir=tmp_path)
    with pytest.raises(TeacherRequestError, match="gave up after 3 attempt") as err:
        run(t.reference(Q))
    assert err.value.status == 503 and srv.count == 3
    assert t.stats.failures == 1 and t.stats.retries == 2
    assert not list(tmp_path.glob("*/*.json"))
    # the server heals: the same call is asked again (nothing cached), and succeeds
    run(t.reference(Q))
    assert srv.count == 4 and len(list(tmp_path.glob("*/*.json"))) == 1


def test_other_4xx_fail_at_once(servers):
    srv = servers(always=400)
    t = fast_teacher([srv.url])
    with pytest.raises(TeacherRequestError) as err:
        run(t.reference(Q))
    assert err.value.status == 400 and srv.count == 1 and t.stats.retries == 0


def test_failover_across_two_base_urls(servers):
    bad, good = servers(always=500), servers()
    t = fast_teacher([bad.url, good.url], concurrency=4)

    async def go():
        async with t:
            return await asyncio.gather(*(t.forward(Q, PREFIX, 1, seed=s) for s in range(8)))

    out = run(go())
    assert len(out) == 8 and t.stats.failures == 0
    assert good.count == 8  # every call ended on the healthy URL
    assert bad.count >= 1 and t.stats.retries == bad.count  # each 500 cost exactly one retry
    assert t.stats.per_url[bad.url] == bad.count


def test_failover_from_a_dead_url(servers):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    good = servers()
    t = fast_teacher([dead, good.url])
    for seed in range(3):
        run(t.forward(Q, PREFIX, 1, seed=seed))
    assert good.count == 3 and t.stats.request_errors["connection"] >= 1


def test_concurrency_limit_and_load_balancing(servers):
    tracker = InFlight()
    a, b = servers(delay=0.15, tracker=tracker), servers(delay=0.15, tracker=tracker)
    t = fast_teacher([a.url, b.url], concurrency=3, timeout=2)

    async def go():
        async with t:
            await asyncio.gather(*(t.forward(Q, PREFIX, 1, seed=s) for s in range(12)))

    run(go())
    assert tracker.max == 3  # reached, never exceeded
    assert a.count + b.count == 12 and min(a.count, b.count) >= 4


def test_malformed_replies_are_retried_with_named_reasons_and_new_seeds(servers, tmp_path):
    srv = servers(schedule=[("content", "Sure! Here are the steps."), ("content", '{"steps": []}'),
                            "garbage", ("content", '{"steps": [{"name": "x"}]}')])
    t = fast_teacher([srv.url], cache_dir=tmp_path)
    steps = run(t.forward(Q, PREFIX, 2, seed=10))
    assert steps and srv.count == 5
    assert t.stats.malformed == 3 and t.stats.retries == 4
    assert dict(t.stats.reply_errors) == {"no_json": 1, "empty_steps": 1, "missing_field": 1}
    assert t.stats.request_errors["bad_response"] == 1
    assert [b["seed"] for b in srv.bodies] == [10, 10 + 7919, 10 + 2 * 7919, 10 + 2 * 7919, 10 + 3 * 7919]
    cached = [json.loads(p.read_text()) for p in tmp_path.glob("*/*.json")]
    assert len(cached) == 1 and cached[0]["seed"] == 10 and "Guess" in cached[0]["reply"]


def test_malformed_forever_raises_a_reply_error(servers, tmp_path):
    srv = servers(always=("content", '{"final_answer": "1"}'))
    t = fast_teacher([srv.url], max_retries=1, cache_dir=tmp_path)
    with pytest.raises(TeacherReplyError, match="no 'steps' list") as err:
        run(t.reference(Q))
    assert err.value.code == "no_steps" and srv.count == 2 and not list(tmp_path.glob("*/*.json"))


def test_teacher_rejects_bad_arguments():
    with pytest.raises(ValueError, match="base_urls"):
        OpenAITeacher([], "m")
    with pytest.raises(ValueError, match="concurrency"):
        OpenAITeacher(["http://x/v1"], "m", concurrency=0)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        LocalTeacher("/nonexistent/model")


def test_local_teacher_batches_and_names_parse_failures(tiny_model_dir, tmp_path):
    """An untrained tiny model writes noise: each call fails with a named reason, generated in one batch."""
    t = LocalTeacher(tiny_model_dir, max_new_tokens=6, temperature=0, max_retries=0, cache_dir=tmp_path)

    async def go():
        return await asyncio.gather(*(t.forward(Q, PREFIX, 1, seed=s) for s in range(3)),
                                    return_exceptions=True)

    out = run(go())
    assert all(isinstance(e, TeacherReplyError) and e.code for e in out)
    assert t.batches == 1 and t.stats.requests == 3 and t.stats.failures == 3
    assert sum(t.stats.reply_errors.values()) == 3 and not list(tmp_path.glob("*/*.json"))


def test_truncation_pipeline_with_the_openai_teacher(servers, tmp_path):
    """Method one end to end over HTTP: steps.jsonl records with a real backtrack; a rerun is free."""
    from steiner.synth.truncate import synthesize_truncations

    srv = servers()
    qs = [Question(id=f"q{i}", question=f"Reach {20 + i} with 1 2 3 4.", answer="x") for i in range(2)]

    def synth(out):
        t = fast_teacher([srv.url], cache_dir=tmp_path / "cache")
        stats = synthesize_truncations(qs, t, out, cuts=1, attempts=1, progress=False, close_teacher=True)
        return t, stats, [json.loads(line) for line in out.read_text().splitlines()]

    t, stats, recs = synth(tmp_path / "a" / "steps.jsonl")
    assert stats.failed == 0 and srv.count == 2 * 3 == t.stats.requests  # reference + forward + reveal
    kinds = sorted(r["kind"] for r in recs)
    assert kinds == ["reference", "reference", "truncation", "truncation"]
    trunc = [r for r in recs if r["kind"] == "truncation"][0]
    back = [s for s in trunc["steps"] if s["decision"] == "backtrack"]
    assert len(back) == 1 and back[0]["returns_to"] == 1 and trunc["steps"][-1]["decision"] == "end"
    assert trunc["teacher"] == "openai:scripted-model"
    t2, _, recs2 = synth(tmp_path / "b" / "steps.jsonl")
    assert srv.count == 6 and t2.stats.cache_hits == 6

    def order(rs):  # records are written as calls finish
        return sorted(rs, key=lambda r: (r["question_id"], r["kind"]))

    assert order(recs2) == order(recs)


def test_structured_output_falls_back_to_json_object_then_text(servers):
    srv = servers(reject_formats=("json_schema",))
    t = fast_teacher([srv.url])
    steps = run(t.forward(Q, PREFIX, 2, seed=1))
    assert steps and t.stats.output_modes == ["json_schema", "json_object"] and t.mode == "json_object"
    assert [(b.get("response_format") or {}).get("type") for b in srv.bodies] == ["json_schema", "json_object"]
    assert t.stats.retries == 0 and t.stats.failures == 0  # a capability probe, not a failed attempt
    run(t.forward(Q, PREFIX, 2, seed=2))  # later requests start in the mode that works
    assert srv.bodies[-1]["response_format"] == {"type": "json_object"} and srv.count == 3
    plain = servers(reject_formats=("json_schema", "json_object"))
    t2 = fast_teacher([plain.url])
    run(t2.forward(Q, PREFIX, 2, seed=1))
    assert t2.mode == "text" and "response_format" not in plain.bodies[-1] and plain.count == 3
    # a mode asked for explicitly is not silently changed: the 400 fails the call
    strict = fast_teacher([srv.url], output="json_schema")
    with pytest.raises(TeacherRequestError) as err:
        run(strict.forward(Q, PREFIX, 2, seed=1))
    assert err.value.status == 400


def test_a_reply_cut_at_the_budget_is_retried_once_with_twice_the_budget(servers, tmp_path):
    srv = servers(schedule=["length"])
    t = fast_teacher([srv.url], max_tokens=300, rejects_path=tmp_path / "rejects.jsonl", cache_dir=tmp_path / "c")
    steps = run(t.forward(Q, PREFIX, 2, seed=1))
    assert steps and [b["max_tokens"] for b in srv.bodies] == [300, 600]
    assert t.stats.reply_errors == {"length": 1} and t.stats.budget_raises == 1
    rej = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert len(rej) == 1 and rej[0]["reason"] == "length" and rej[0]["finish_reason"] == "length"
    assert rej[0]["question_id"] == "q1" and rej[0]["call"] == "forward" and rej[0]["reply"].startswith("```json")
    # cut twice: reported as "length" after exactly two requests, although retries are left
    srv2 = servers(always="length")
    t2 = fast_teacher([srv2.url], max_tokens=300, max_retries=4)
    with pytest.raises(TeacherReplyError, match="token budget") as err:
        run(t2.reference(Q))
    assert err.value.code == "length" and [b["max_tokens"] for b in srv2.bodies] == [300, 600]


def test_unparseable_replies_go_to_the_rejects_file_with_reason_and_raw_text(servers, tmp_path):
    raw = "<think>I am not sure {at all}</think> Sorry, I cannot answer that."
    srv = servers(schedule=[("content", raw)])
    t = fast_teacher([srv.url], rejects_path=tmp_path / "r.jsonl")
    run(t.reference(Q))
    (rec,) = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert rec["reason"] == "no_json" and rec["reply"] == raw and rec["call"] == "reference"
    assert rec["teacher"] == "openai:scripted-model" and rec["finish_reason"] == "stop"


def test_circuit_breaker_benches_a_url_that_fails_instantly(servers):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    good = servers()
    t = fast_teacher([dead, good.url], breaker_failures=2, breaker_seconds=30)
    for seed in range(12):
        run(t.forward(Q, PREFIX, 1, seed=seed))
    # without the breaker the dead URL would take about every other first attempt (6 of 12)
    assert t.stats.per_url[dead] == 2 and t.stats.benched[dead] == 1 and good.count == 12
    assert t.stats.failures == 0
    # after the bench the URL gets one probe; failing again benches it for twice as long
    t.benched_until[0] = 0.0
    run(t.forward(Q, PREFIX, 1, seed=99))
    assert t.stats.per_url[dead] == 3 and t.stats.benched[dead] == 2
    assert t.benched_until[0] - time.monotonic() > 40
