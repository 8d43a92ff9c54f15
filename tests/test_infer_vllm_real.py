"""steiner's vLLM adapters inside real vLLM (CPU build): offline ``vllm.LLM`` and the OpenAI server.

vLLM lives in its own venv (``scripts/setup_vllm.sh`` -> ``.venv-vllm``); these tests drive it in
subprocesses and check its output here with steiner's tokenizer. Skipped unless that venv exists or
``vllm`` is importable in this interpreter.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from steiner.tokenizer import ReasoningTokenIds

ROOT = Path(__file__).resolve().parents[1]
VENV_PY = ROOT / ".venv-vllm" / "bin" / "python"


def vllm_python() -> str | None:
    """The interpreter that has vLLM: .venv-vllm's, else this one if vllm imports here."""
    if VENV_PY.exists():
        return str(VENV_PY)
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    return None


PY = vllm_python()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(PY is None, reason="no vLLM: run scripts/setup_vllm.sh")]
ENV = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory, tiny_tokenizer):
    """An untrained tiny Qwen2 folder vLLM's CPU attention accepts (head_dim 32: 64 wide, 2 heads)."""
    from steiner.modeling import TinyModelConfig, build_model

    out = tmp_path_factory.mktemp("vllm_model")
    build_model(tiny_tokenizer, TinyModelConfig(hidden_size=64, num_heads=2)).save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


def allowed_after(ids: ReasoningTokenIds, prefix: list[int], lo: int, hi: int | None) -> set[int] | None:
    """What the step-bounds rules let follow ``prefix`` (None: anything)."""
    if not prefix:
        return {ids.reasoning_start}
    if prefix[-1] == ids.step_end:
        n = prefix.count(ids.step_end)
        if hi is not None and n >= hi:
            return {ids.reasoning_end}
        return {ids.proceed, ids.backtrack} if n < lo else {ids.proceed, ids.backtrack, ids.reasoning_end}
    if prefix[-1] in (ids.proceed, ids.backtrack):
        return {ids.step_start}
    return None


def rule_breaks(ids: ReasoningTokenIds, tokens: list[int], lo: int, hi: int | None) -> list[int]:
    """Positions where ``tokens`` break the rules."""
    return [k for k in range(len(tokens))
            if (allowed := allowed_after(ids, tokens[:k], lo, hi)) is not None and tokens[k] not in allowed]


def check_bounds(ids: ReasoningTokenIds, tokens: list[int], lo: int, hi: int | None) -> None:
    """The reasoning (up to its first end) has at most ``hi`` steps, and closes after a step only past ``lo``."""
    end = tokens.index(ids.reasoning_end) if ids.reasoning_end in tokens else len(tokens)
    reasoning = tokens[:end]
    steps = reasoning.count(ids.step_end)
    assert hi is None or steps <= hi, (steps, hi)
    if end < len(tokens) and reasoning and reasoning[-1] == ids.step_end:
        assert steps >= lo, (steps, lo)


def test_offline_llm_step_bounds_and_parser(vllm_model_dir, tiny_tokenizer, tmp_path):
    ids = ReasoningTokenIds.from_tokenizer(tiny_tokenizer)
    out = tmp_path / "result.json"
    proc = subprocess.run([PY, str(ROOT / "scripts" / "vllm_check.py"), str(vllm_model_dir), "--out", str(out)],
                          env=ENV, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    opted = [r for r in report["results"] if r["min_steps"] is not None or r["max_steps"] is not None]
    free = [r for r in report["results"] if r not in opted]
    assert len(opted) == 8 and len(free) == 2
    decisions = set()
    for r in opted:
        tokens, lo, hi = r["token_ids"], r["min_steps"], r["max_steps"]
        assert len(tokens) == r["max_tokens"] and r["finish_reason"] == "length"  # eos banned: full length
        assert tokens[0] == ids.reasoning_start
        assert rule_breaks(ids, tokens, lo, hi) == [], (r["min_steps"], r["max_steps"], r["text"])
        check_bounds(ids, tokens, lo, hi)
        assert tokens.count(ids.step_end) >= 1  # the bias made steps to count
        decisions |= {tokens[k + 1] for k, t in enumerate(tokens[:-1]) if t == ids.step_end}
        # the parser (registered as a vLLM plugin) splits at the first <|reasoning_end|>
        text = r["text"]
        cut = text.index("<|reasoning_end|>") + len("<|reasoning_end|>") if "<|reasoning_end|>" in text else len(text)
        assert r["reasoning"] == text[:cut] and (r["content"] or "") == text[cut:]
        assert r["reasoning_tokens"] == (tokens.index(ids.reasoning_end) + 1 if ids.reasoning_end in tokens
                                         else len(tokens))
    assert {ids.proceed, ids.backtrack, ids.reasoning_end} <= decisions  # every forced branch was taken
    # rows that did not opt in stay untouched although they share the batch
    for r in free:
        assert rule_breaks(ids, r["token_ids"], 0, None), r["text"]
        assert r["reasoning"] is None and r["content"] == r["text"]
    assert report["parser_class"] == "SteinerVLLMReasoningParser"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openai_server_with_processor_and_parser_plugin(vllm_model_dir, tiny_tokenizer, tmp_path):
    """The documented serve command: processor by FQCN, parser by plugin module; real openai client."""
    import httpx
    from openai import OpenAI

    ids = ReasoningTokenIds.from_tokenizer(tiny_tokenizer)
    port = free_port()
    cmd = [PY, "-m", "vllm.entrypoints.openai.api_server", "--model", str(vllm_model_dir), "--port", str(port),
           "--host", "127.0.0.1", "--dtype", "float32", "--enforce-eager", "--max-model-len", "512",
           "--logits-processors", "steiner.infer.vllm_processors:SteinerStepBoundsLogitsProcessor",
           "--reasoning-parser-plugin", "steiner.infer.vllm_plugin", "--reasoning-parser", "steiner"]
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(cmd, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-4000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "vLLM server did not come up in 300 s"
            time.sleep(2)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        messages = [{"role": "user", "content": "Reach 24 with 3 5 7 11."}]
        common = dict(model=str(vllm_model_dir), messages=messages, max_tokens=80, temperature=1.0,
                      logit_bias={str(ids.step_end): 4.0, str(tiny_tokenizer.eos_token_id): -100},
                      extra_body={"vllm_xargs": {"min_steps": 2, "max_steps": 3}})
        for seed in (1, 2):
            msg = client.chat.completions.create(seed=seed, **common).choices[0].message
            reasoning = (msg.model_extra or {}).get("reasoning") or (msg.model_extra or {}).get("reasoning_content")
            # no skip_special_tokens in the request: the parser's adjust_request keeps them
            assert reasoning.startswith("<|reasoning_start|>") and reasoning.endswith("<|reasoning_end|>")
            steps = reasoning.count("<|reasoning_step_end|>")
            assert 1 <= steps <= 3 and "<|reasoning_start|>" not in (msg.content or "")
            if reasoning.endswith("<|reasoning_step_end|><|reasoning_end|>"):  # closed at a decision
                assert steps >= 2
            # streaming: the deltas add up to the same split
            stream = client.chat.completions.create(seed=seed, stream=True, **common)
            got = {"reasoning": "", "content": ""}
            for chunk in stream:
                for choice in chunk.choices:
                    extra = choice.delta.model_extra or {}
                    got["reasoning"] += extra.get("reasoning") or extra.get("reasoning_content") or ""
                    got["content"] += choice.delta.content or ""
            assert got == {"reasoning": reasoning, "content": msg.content or ""}
        # bad bounds are rejected with HTTP 400 naming the field
        from openai import BadRequestError

        with pytest.raises(BadRequestError, match="min_steps"):
            client.chat.completions.create(**{**common, "extra_body": {"vllm_xargs": {"min_steps": 5, "max_steps": 2}}})
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


FORMAT_CHECK = r"""
import json, sys
from vllm import LLM, SamplingParams
from steiner.infer import vllm_processors as vp

model, out = sys.argv[1], sys.argv[2]
llm = LLM(model, dtype="float32", enforce_eager=True, max_model_len=512, max_num_seqs=8, seed=0,
          logits_processors=[vp.SteinerFormatLogitsProcessor, vp.SteinerStepBoundsLogitsProcessor])
user = [{"role": "user", "content": "Reach 24 with 3 5 7 11."}]
system = [{"role": "system", "content": "You are careful. Think step by step."}]
results = []
for temperature in (1.0, 1.5):
    for convo in (user, system + user):
        for strict in (True, False):
            extra = {"format_strict": True, "min_steps": 1, "max_steps": 3} if strict else None
            params = [SamplingParams(max_tokens=64, temperature=temperature, seed=s, skip_special_tokens=False,
                                     extra_args=extra) for s in range(6)]
            outs = llm.chat([convo] * 6, params, use_tqdm=False)
            for o in outs:
                c = o.outputs[0]
                results.append({"strict": strict, "temperature": temperature, "system": len(convo) == 2,
                                "token_ids": list(c.token_ids), "text": c.text, "finish_reason": c.finish_reason})
json.dump(results, open(out, "w"))
"""


def test_offline_llm_format_processor_always_parses(vllm_model_dir, tiny_tokenizer, tmp_path):
    """The v1 format adapter inside real vLLM: an untrained model at temperature 1.0 and 1.5, with and
    without a system prompt; every opted-in completion ends with eos within max_tokens and parses with
    no problem (and the free ones, in the same batches, do not)."""
    from steiner.format import parse

    out = tmp_path / "format.json"
    proc = subprocess.run([PY, "-c", FORMAT_CHECK, str(vllm_model_dir), str(out)], env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out.read_text())
    strict = [r for r in results if r["strict"]]
    assert len(strict) == 24 and {(r["temperature"], r["system"]) for r in strict} == {
        (1.0, False), (1.0, True), (1.5, False), (1.5, True)}
    for r in strict:
        assert r["finish_reason"] == "stop" and len(r["token_ids"]) <= 64, r
        path = parse(tiny_tokenizer.decode([t for t in r["token_ids"] if t != tiny_tokenizer.eos_token_id],
                                           skip_special_tokens=False))
        assert path.ok and path.complete and 1 <= len(path.steps) <= 3, [str(p) for p in path.problems]
    free = [r for r in results if not r["strict"]]
    assert not any(parse(r["text"]).ok for r in free)


def test_steiner_serve_engine_vllm(vllm_model_dir, tiny_tokenizer, tmp_path):
    """`steiner serve --engine vllm` as a user runs it: vLLM's server with steiner's parser and both
    processors; the real openai client asks for the format through vllm_xargs."""
    import httpx
    from openai import OpenAI

    from steiner.format import parse

    port = free_port()
    env = {**ENV, "PATH": f"{Path(PY).parent}:{os.environ.get('PATH', '')}"}
    cmd = [sys.executable, "-m", "steiner.cli", "serve", "--engine", "vllm", "--vllm-python", PY, "--model",
           str(vllm_model_dir), "--port", str(port), "--served-model-name", "tiny", "--dtype", "float32",
           "--api-key", "k1", "--vllm-args", "--max-model-len 512 --enforce-eager", "--log-level", "warning"]
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-4000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "vLLM server did not come up in 300 s"
            time.sleep(2)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k1", max_retries=0)
        messages = [{"role": "system", "content": "Be careful."}, {"role": "user", "content": "Reach 24."}]
        r = client.chat.completions.create(model="tiny", messages=messages, n=4, max_tokens=64, temperature=1.5,
                                           seed=3, extra_body={"vllm_xargs": {"format_strict": True, "max_steps": 2}})
        for c in r.choices:
            reasoning = (c.message.model_extra or {}).get("reasoning") or (c.message.model_extra or {}).get(
                "reasoning_content")
            path = parse(reasoning + (c.message.content or ""))
            assert c.finish_reason == "stop" and path.ok and path.complete and len(path.steps) <= 2, reasoning
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401  # the API key is enforced
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
