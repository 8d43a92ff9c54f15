"""The endpoint backend against a real loopback OpenAI-compatible server with scripted answers."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from steiner.eval.runner import EvalConfig, load_samples, main
from steiner.format import ReasoningPath, Step, render, split_reasoning

STEINER = render(ReasoningPath([Step("Recall", "Mercury orbits closest.", "Mercury", "sure", "proceed"),
                                Step("Check", "Venus is second.", "Venus second", "consistent", "end")], "Answer: B"))
STEINER_REASONING, _ = split_reasoning(STEINER)


def script(question: str, hit: int) -> tuple[int, dict]:
    """(status, body) for the ``hit``-th request (1-based) about ``question`` from mc_sample."""
    def ok(content: str, **message) -> tuple[int, dict]:
        return 200, {
            "id": "c", "object": "chat.completion", "created": 0, "model": "scripted",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content, **message}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 30, "total_tokens": 40,
                      "completion_tokens_details": {"reasoning_tokens": 25}},
        }

    if "closest to the Sun" in question:  # mc-1, gold B: Steiner reasoning apart from the content
        return ok("Answer: B", reasoning_content=STEINER_REASONING)
    if "sodium" in question:  # mc-2, gold C: plain reasoning under "reasoning", bare letter
        return ok("C", reasoning="Sodium is Na.")
    if "edges does a cube" in question:  # mc-3, gold D: rate limited twice, then a wrong answer
        if hit <= 2:
            return 429, {"error": {"message": "slow down", "type": "rate_limit"}}
        return ok("The answer is (A).")
    if "first-in, first-out" in question:  # mc-4, gold A: the server always fails
        return 500, {"error": {"message": "boom", "type": "server_error"}}
    if "derivative" in question:  # mc-5, gold B: reasoning left inside the content
        return ok(STEINER)
    return 404, {"error": {"message": "unscripted"}}


class ScriptedServer:
    """A minimal OpenAI chat-completions server on 127.0.0.1 in a thread; records every request."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                question = body["messages"][-1]["content"]
                with server.lock:
                    server.bodies.append(body)
                    key = question.split("\n")[0]
                    server.hits[key] += 1
                    hit = server.hits[key]
                status, payload = script(question, hit) if self.path == "/v1/chat/completions" else (404, {})
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("retry-after-ms", "20")  # keeps the client's retries quick
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def hits_for(self, fragment: str) -> int:
        return sum(v for k, v in self.hits.items() if fragment in k)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    s = ScriptedServer()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def test_endpoint_scripted_accuracy_failures_and_resume(tmp_path: Path, server: ScriptedServer) -> None:
    cfg = EvalConfig(task="mc_sample", limit=5, n=2, base_url=server.base_url, model_name="scripted",
                     api_key="test-key", min_steps=1, max_steps=3, concurrency=4, max_retries=2,
                     timeout=20, out=str(tmp_path / "ep"))
    report = main(cfg)
    m = report["metrics"]
    # scripted: mc-1, mc-2, mc-5 correct; mc-3 wrong; mc-4 fails every time
    assert m["num_questions"] == 5 and m["num_samples"] == 10
    assert m["pass@1"] == pytest.approx(3 / 5) and m["maj@2"] == pytest.approx(3 / 5)
    assert m["num_failed"] == 2
    samples = {(s["question_id"], s["sample"]): s for s in load_samples(tmp_path / "ep" / "samples.jsonl").values()}
    for j in range(2):
        failed = samples[("mc-4", j)]
        assert failed["failed"] and not failed["correct"] and "HTTP 500" in failed["error"]
        assert samples[("mc-1", j)]["correct"] and samples[("mc-1", j)]["format_ok"]
        assert samples[("mc-1", j)]["num_steps"] == 2 and samples[("mc-1", j)]["reasoning_tokens"] == 25
        assert samples[("mc-2", j)]["correct"] and samples[("mc-2", j)]["format_ok"] is False
        assert samples[("mc-3", j)]["extracted"] == "A" and not samples[("mc-3", j)]["correct"]
        assert samples[("mc-5", j)]["correct"] and samples[("mc-5", j)]["answer"] == "Answer: B"
    # retries: 1 + max_retries attempts for each failing sample; the rate-limited question recovered
    assert server.hits_for("first-in, first-out") == 2 * 3
    assert server.hits_for("edges does a cube") == 4
    # step bounds travel in the request body; the prompt is the question with lettered choices
    body = server.bodies[0]
    assert body["min_steps"] == 1 and body["max_steps"] == 3 and body["model"] == "scripted"
    assert body["messages"][-1]["content"].endswith("Answer with the letter.")
    per_q = {r["id"]: r for r in report["per_question"]}
    assert per_q["mc-4"]["num_failed"] == 2 and per_q["mc-4"]["majority"] is None

    # a rerun asks again only for the failed samples
    before = Counter(server.hits)
    again = main(cfg)
    new = {k: server.hits[k] - before[k] for k in server.hits if server.hits[k] != before[k]}
    assert list(new) == [k for k in server.hits if "first-in, first-out" in k] and sum(new.values()) == 6
    assert again["metrics"]["pass@1"] == pytest.approx(3 / 5)
    assert len(load_samples(tmp_path / "ep" / "samples.jsonl")) == 10


def test_endpoint_defaults_send_no_step_fields(tmp_path: Path, server: ScriptedServer) -> None:
    cfg = EvalConfig(task="mc_sample", limit=1, n=1, base_url=server.base_url, model_name="scripted",
                     out=str(tmp_path / "ep"))
    assert main(cfg)["metrics"]["pass@1"] == 1.0
    assert "min_steps" not in server.bodies[0] and "max_steps" not in server.bodies[0]


def test_endpoint_config_errors() -> None:
    from steiner.config import ConfigError

    with pytest.raises(ConfigError, match="--base-url needs --model-name"):
        EvalConfig(task="mc_sample", base_url="http://127.0.0.1:1/v1").check_source()
    with pytest.raises(ConfigError, match="either a local model"):
        EvalConfig(task="mc_sample").check_source()
    with pytest.raises(ConfigError, match="min_steps"):
        EvalConfig(task="mc_sample", min_steps=4, max_steps=2)


def test_eval_against_steiner_serve(tmp_path: Path, tiny_model_dir) -> None:
    """`steiner eval` against the project's own OpenAI-compatible server (uvicorn on loopback, tiny model)."""
    import socket
    import time

    import torch
    import uvicorn

    from steiner.serve import ServeConfig, create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(ServeConfig(model=str(tiny_model_dir), served_model_name="tiny", api_key="k"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        cfg = EvalConfig(task="mc_sample", limit=3, n=2, base_url=f"http://127.0.0.1:{port}/v1", model_name="tiny",
                         api_key="k", max_new_tokens=48, min_steps=1, max_steps=2, format_strict=True,
                         out=str(tmp_path / "serve"))
        m = main(cfg)["metrics"]
        assert m["num_samples"] == 6 and m["num_failed"] == 0
        samples = list(load_samples(tmp_path / "serve" / "samples.jsonl").values())
        for s in samples:
            assert s["reasoning_tokens"] is not None and s["completion_tokens"] <= 48
            assert s["text"].startswith("<|reasoning_start|>")  # reasoning_content came back with its tokens
            assert 1 <= s["num_steps"] <= 2  # the step bounds reached the server's processors
        # a wrong key is a recorded failure, not a crash and not a correct answer
        bad = main(EvalConfig(**{**cfg.__dict__, "api_key": "wrong", "out": str(tmp_path / "bad"), "n": 1}))
        assert bad["metrics"]["num_failed"] == 3 and bad["metrics"]["pass@1"] == 0.0
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        torch.set_num_threads(threads)
