"""vLLM adapters driven with the call sequence vLLM makes; only the vLLM objects are stand-ins."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto

import pytest
import torch

from steiner.format import parse
from steiner.infer.vllm_processors import FormatBatchProcessor, StepBoundsBatchProcessor, step_bounds_for_vllm
from steiner.tokenizer import ReasoningTokenIds


class MoveDirectionality(Enum):  # mirrors vllm.v1.sample.logits_processor.MoveDirectionality
    UNIDIRECTIONAL = auto()
    SWAP = auto()


@dataclass
class Params:  # the part of vllm.SamplingParams the processors read
    extra_args: dict | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class BatchUpdate:  # mirrors vllm.v1.sample.logits_processor.BatchUpdate
    batch_size: int
    removed: list = field(default_factory=list)
    added: list = field(default_factory=list)
    moved: list = field(default_factory=list)


def finite(row: torch.Tensor) -> set[int]:
    return set(torch.nonzero(torch.isfinite(row)).flatten().tolist())


@pytest.fixture(scope="module")
def ids(tiny_tokenizer):
    return ReasoningTokenIds.from_tokenizer(tiny_tokenizer)


def test_v0_callable(tiny_tokenizer, ids):
    proc = step_bounds_for_vllm(tiny_tokenizer, min_steps=2, max_steps=2)
    logits = torch.zeros(420)
    assert finite(proc([], logits)) == {ids.reasoning_start}
    assert len(finite(proc([ids.reasoning_start, 5], logits))) == 420
    one = [ids.reasoning_start, ids.step_start, 5, ids.step_end]
    assert finite(proc(one, logits)) == {ids.proceed, ids.backtrack}
    assert finite(proc(one + [ids.backtrack], logits)) == {ids.step_start}
    assert finite(proc(one + [ids.proceed, ids.step_start, 6, ids.step_end], logits)) == {ids.reasoning_end}
    out = proc(one, logits)
    assert out is not logits and torch.equal(logits, torch.zeros(420))
    with pytest.raises(ValueError, match="max_steps"):
        step_bounds_for_vllm(tiny_tokenizer, max_steps=-1)


def test_v1_batch_processor_follows_batch_updates(tiny_tokenizer, ids):
    proc = StepBoundsBatchProcessor(None, torch.device("cpu"), False, tokenizer=tiny_tokenizer)
    assert proc.is_argmax_invariant() is False
    out_a: list[int] = []  # vLLM hands over each request's running output list by reference
    out_b: list[int] = []
    out_c: list[int] = []
    proc.update_state(BatchUpdate(3, added=[
        (0, Params({"max_steps": 1}), [1, 2], out_a),
        (1, Params(None), [1, 2], out_b),  # did not opt in
        (2, Params({"min_steps": 2}), [1, 2], out_c),
    ]))
    got = proc.apply(torch.zeros(3, 420))
    assert finite(got[0]) == {ids.reasoning_start} and len(finite(got[1])) == 420
    assert finite(got[2]) == {ids.reasoning_start}

    out_a += [ids.reasoning_start, ids.step_start, 7, ids.step_end]
    out_b += [ids.reasoning_start]
    out_c += [ids.reasoning_start, ids.step_start, 7, ids.step_end]
    proc.update_state(None)  # no batch change, just new tokens
    got = proc.apply(torch.zeros(3, 420))
    assert finite(got[0]) == {ids.reasoning_end}
    assert finite(got[2]) == {ids.proceed, ids.backtrack}

    # swap rows 0 and 2: their states travel with them
    proc.update_state(BatchUpdate(3, moved=[(0, 2, MoveDirectionality.SWAP)]))
    got = proc.apply(torch.zeros(3, 420))
    assert finite(got[2]) == {ids.reasoning_end} and finite(got[0]) == {ids.proceed, ids.backtrack}

    # remove row 1, then move row 2 into its place (one-way)
    proc.update_state(BatchUpdate(2, removed=[1], moved=[(2, 1, MoveDirectionality.UNIDIRECTIONAL)]))
    got = proc.apply(torch.zeros(2, 420))
    assert finite(got[1]) == {ids.reasoning_end} and finite(got[0]) == {ids.proceed, ids.backtrack}

    # the running count stays right as tokens keep arriving
    out_c += [ids.proceed, ids.step_start, 8, ids.step_end]
    got = proc.apply(torch.zeros(2, 420))
    assert finite(got[0]) == {ids.proceed, ids.backtrack, ids.reasoning_end}
    assert proc.requests[0].step_ends == 2


def test_v1_validate_params():
    StepBoundsBatchProcessor.validate_params(Params({"min_steps": 1, "max_steps": 3}))
    StepBoundsBatchProcessor.validate_params(Params(None))
    with pytest.raises(ValueError, match="min_steps"):
        StepBoundsBatchProcessor.validate_params(Params({"min_steps": 4, "max_steps": 3}))
    with pytest.raises(ValueError, match="max_steps"):
        StepBoundsBatchProcessor.validate_params(Params({"max_steps": "many"}))


def test_parser_keeps_special_tokens_in_requests(tiny_tokenizer):
    from steiner.infer.reasoning_parser import SteinerReasoningParser

    @dataclass
    class Request:  # the field of vLLM's ChatCompletionRequest the parser sets
        skip_special_tokens: bool = True

    req = Request()
    assert SteinerReasoningParser(tiny_tokenizer).adjust_request(req) is req and req.skip_special_tokens is False


# Real vLLM runs (offline engine and OpenAI server): tests/test_infer_vllm_real.py


def test_v1_format_processor_matches_the_transformers_one(tiny_tokenizer, ids):
    """Driven as vLLM drives it (rows added, swapped, removed; outputs appended by reference), each
    opted-in row is masked exactly as `FormatLogitsProcessor` masks the same completion."""
    from steiner.infer import FormatLogitsProcessor

    proc = FormatBatchProcessor(None, torch.device("cpu"), False, tokenizer=tiny_tokenizer)
    settings = [{"format_strict": True, "min_steps": 1, "max_steps": 2}, None, {"max_reasoning_tokens": 40},
                {"format_strict": True}]
    max_tokens = [60, 30, 70, 24]
    outs: list[list[int]] = [[] for _ in settings]
    slot = list(range(len(settings)))  # request -> batch row
    proc.update_state(BatchUpdate(4, added=[(i, Params(settings[i], max_tokens[i]), [5], outs[i])
                                            for i in range(4)]))
    assert set(proc.requests) == {0, 2, 3}
    g = torch.Generator().manual_seed(0)
    structural = ids.all() + [tiny_tokenizer.eos_token_id]
    done: set[int] = set()
    for step in range(75):
        if step == 10:  # vLLM swaps rows 0 and 2
            proc.update_state(BatchUpdate(4, moved=[(0, 2, MoveDirectionality.SWAP)]))
            slot[0], slot[2] = 2, 0
        logits = torch.randn(4, len(tiny_tokenizer) + 2, generator=g) * 3
        logits[:, structural] += 1.5
        before = logits.clone()
        out = proc.apply(logits)
        assert torch.equal(logits, before)  # the input is not edited
        for req, row in enumerate(slot):
            if req in done:
                continue
            if settings[req] is None:
                assert torch.equal(out[row], logits[row])
            else:
                s = settings[req]
                ref = FormatLogitsProcessor(tiny_tokenizer, s.get("min_steps", 0), s.get("max_steps"),
                                            s.get("max_reasoning_tokens"), prompt_lengths=1,
                                            max_new_tokens=max_tokens[req])
                want = ref(torch.tensor([[7] + outs[req]]), logits[row : row + 1])[0]
                assert torch.equal(out[row], want), (req, step)
            tok = int(torch.multinomial(torch.softmax(out[row], -1), 1, generator=g))
            outs[req].append(tok)
            if tok == tiny_tokenizer.eos_token_id or len(outs[req]) >= max_tokens[req]:
                done.add(req)
                proc.update_state(BatchUpdate(4, removed=[row]))
    for req in (0, 2, 3):  # every opted-in completion ended with eos within its budget and parses
        assert outs[req][-1] == tiny_tokenizer.eos_token_id and len(outs[req]) <= max_tokens[req]
        path = parse(tiny_tokenizer.decode(outs[req][:-1], skip_special_tokens=False))
        assert path.ok and path.complete, [str(p) for p in path.problems]
    with pytest.raises(ValueError, match="min_steps"):
        FormatBatchProcessor.validate_params(Params({"format_strict": True, "min_steps": 3, "max_steps": 1}))
    with pytest.raises(ValueError, match="format_strict"):
        FormatBatchProcessor.validate_params(Params({"format_strict": "yes"}))
    from steiner.infer.vllm_processors import params_format

    # over HTTP vllm_xargs carries true as 1
    assert params_format(Params({"format_strict": 1}, 50)) == (0, None, None, 50)
    assert params_format(Params({"format_strict": 0})) is None
    # a request for the format is the format processor's alone: step bounds leave it untouched
    sb = StepBoundsBatchProcessor(None, torch.device("cpu"), False, tokenizer=tiny_tokenizer)
    sb.update_state(BatchUpdate(1, added=[(0, Params({"format_strict": True, "min_steps": 2}), [5], [])]))
    assert sb.requests == {}
