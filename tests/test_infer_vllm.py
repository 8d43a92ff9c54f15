"""vLLM adapters driven with the call sequence vLLM makes; only the vLLM objects are stand-ins."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto

import pytest
import torch

from steiner.infer.vllm_processors import StepBoundsBatchProcessor, step_bounds_for_vllm
from steiner.tokenizer import ReasoningTokenIds


class MoveDirectionality(Enum):  # mirrors vllm.v1.sample.logits_processor.MoveDirectionality
    UNIDIRECTIONAL = auto()
    SWAP = auto()


@dataclass
class Params:  # the part of vllm.SamplingParams the processor reads
    extra_args: dict | None = None


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
