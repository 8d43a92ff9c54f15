"""Run steiner's vLLM adapters inside real vLLM (offline ``vllm.LLM``) and dump what came out as JSON.

Run it with the interpreter of a venv that has vLLM (``scripts/setup_vllm.sh`` makes ``.venv-vllm``):

    VLLM_CPU_KVCACHE_SPACE=2 .venv-vllm/bin/python scripts/vllm_check.py MODEL_DIR --out result.json

It generates a mix of requests in one batch: several opt into the v1 step-bounds processor
(``SamplingParams.extra_args``: ``min_steps``/``max_steps``) with different lengths, so vLLM adds,
removes and moves rows while others run; two do not opt in. An untrained model rarely writes the
reasoning tokens, so every request raises ``<|reasoning_step_end|>`` with ``logit_bias`` (and bans
eos, so lengths are fixed): the processor then has step ends to count. Each completion is split by
the reasoning parser registered as a vLLM plugin ("steiner"), looked up through vLLM's registry.
The checks live in tests/test_infer_vllm_real.py; this script only runs vLLM and reports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# (min_steps, max_steps, max_tokens); None bounds = the request does not opt in
REQUESTS: list[tuple[int | None, int | None, int]] = [
    (2, 3, 60),
    (0, 1, 24),
    (3, 3, 80),
    (1, None, 40),
    (None, None, 50),
    (2, 5, 70),
    (4, 6, 90),
    (None, None, 30),
    (0, 2, 45),
    (1, 4, 65),
]
STEP_END_BIAS = 4.0


def build_params(ids, tok_eos: int, bounds: tuple[int | None, int | None, int], seed: int):
    """SamplingParams for one request (opting in through extra_args when bounds are given)."""
    from vllm import SamplingParams

    lo, hi, max_tokens = bounds
    extra = None if lo is None and hi is None else {"min_steps": lo or 0, "max_steps": hi}
    return SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=seed, skip_special_tokens=False,
                          logit_bias={ids.step_end: STEP_END_BIAS, tok_eos: -100.0}, extra_args=extra)


def v0_supported() -> bool:
    """Whether this vLLM still takes per-request ``SamplingParams.logits_processors`` (the v0 API)."""
    from vllm import SamplingParams

    try:
        SamplingParams(logits_processors=[])
    except TypeError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="a save_pretrained folder with the steiner tokenizer")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")

    import vllm
    from vllm import LLM
    from vllm.reasoning import ReasoningParserManager

    from steiner.infer import vllm_processors
    from steiner.infer.reasoning_parser import register_vllm_plugin
    from steiner.tokenizer import ReasoningTokenIds

    t0 = time.time()
    llm = LLM(args.model, dtype="float32", enforce_eager=True, max_model_len=512, max_num_seqs=4,
              seed=args.seed, logits_processors=[vllm_processors.SteinerStepBoundsLogitsProcessor])
    load_s = time.time() - t0
    tok = llm.get_tokenizer()
    ids = ReasoningTokenIds.from_tokenizer(tok)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Reach 24 with 3 5 7 11."}],
                                     add_generation_prompt=True, tokenize=False)
    params = [build_params(ids, tok.eos_token_id, b, args.seed + i) for i, b in enumerate(REQUESTS)]
    t0 = time.time()
    outs = llm.generate([prompt] * len(params), params, use_tqdm=False)
    gen_s = time.time() - t0

    register_vllm_plugin()
    parser = ReasoningParserManager.get_reasoning_parser("steiner")(tok)
    results = []
    for (lo, hi, max_tokens), out in zip(REQUESTS, outs, strict=True):
        comp = out.outputs[0]
        reasoning, content = parser.extract_reasoning(comp.text, None)
        results.append({"min_steps": lo, "max_steps": hi, "max_tokens": max_tokens,
                        "token_ids": list(comp.token_ids), "text": comp.text, "finish_reason": comp.finish_reason,
                        "reasoning": reasoning, "content": content,
                        "reasoning_tokens": parser.count_reasoning_tokens(list(comp.token_ids))})
    report = {"vllm_version": vllm.__version__, "v0_supported": v0_supported(), "load_s": load_s,
              "generate_s": gen_s, "parser_class": type(parser).__name__, "results": results}
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"vLLM {vllm.__version__}: {len(results)} completions in {gen_s:.1f}s (load {load_s:.1f}s) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
