"""Step-bounds and format logits processors: each rule, no in-place edits, real model.generate."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from steiner.format import parse
from steiner.infer import FormatLogitsProcessor, StepBoundsLogitsProcessor
from steiner.tokenizer import ReasoningTokenIds


def uniform_logits(rows: int, vocab: int) -> torch.Tensor:
    return torch.full((rows, vocab), 1.0 / vocab)


def allowed(scores: torch.Tensor) -> list[set[int]]:
    return [set(torch.nonzero(torch.isfinite(row)).flatten().tolist()) for row in scores]


class BoostReasoning(LogitsProcessor):
    """Make structural tokens likely so an untrained model actually closes fields and steps."""

    def __init__(self, ids: list[int], boost: float) -> None:
        self.ids, self.boost = ids, boost

    def __call__(self, input_ids, scores):
        out = scores.clone()
        out[:, self.ids] += self.boost
        return out


@pytest.fixture(scope="module")
def ids(tiny_tokenizer) -> ReasoningTokenIds:
    return ReasoningTokenIds.from_tokenizer(tiny_tokenizer)


def test_step_bounds_each_rule(tiny_tokenizer, ids):
    vocab = len(tiny_tokenizer) + 2  # models pad their output layer
    proc = StepBoundsLogitsProcessor(tiny_tokenizer, min_steps=2, max_steps=3, prompt_lengths=2)
    text = 7  # an ordinary text token id
    p = [text, text]  # the prompt: 2 columns
    step = [ids.step_start, text, ids.step_end]
    cases = [
        (p, {ids.reasoning_start}),  # no completion token yet
        (p + [ids.reasoning_start], None),  # untouched
        (p + [ids.reasoning_start] + step, {ids.proceed, ids.backtrack}),  # 1 < min_steps
        (p + [ids.reasoning_start] + step + [ids.proceed], {ids.step_start}),
        (p + [ids.reasoning_start] + step + [ids.backtrack], {ids.step_start}),
        (p + [ids.reasoning_start] + step + [ids.proceed] + step, {ids.proceed, ids.backtrack, ids.reasoning_end}),
        (p + [ids.reasoning_start] + (step + [ids.proceed]) * 2 + step, {ids.reasoning_end}),  # 3 >= max
        (p + [ids.reasoning_start, ids.step_start, text], None),
    ]
    for seq, expect in cases:
        input_ids = torch.tensor([seq])
        scores = uniform_logits(1, vocab)
        before = scores.clone()
        out = proc(input_ids, scores)
        assert torch.equal(scores, before), "scores were edited in place"
        got = allowed(out)[0]
        assert got == (set(range(vocab)) if expect is None else expect), (seq, got)
        if expect is not None:  # the model's own logits are kept for the allowed tokens
            assert all(out[0, i] == scores[0, i] for i in expect)


def test_step_bounds_counts_only_the_completion(tiny_tokenizer, ids):
    # step ends inside the prompt must not count
    prompt = [ids.step_end] * 5
    proc = StepBoundsLogitsProcessor(tiny_tokenizer, max_steps=2, prompt_lengths=len(prompt))
    seq = prompt + [ids.reasoning_start, ids.step_start, 9, ids.step_end]
    assert allowed(proc(torch.tensor([seq]), uniform_logits(1, 420)))[0] == {
        ids.proceed, ids.backtrack, ids.reasoning_end}


def test_step_bounds_batch_rows_differ(tiny_tokenizer, ids):
    proc = StepBoundsLogitsProcessor(tiny_tokenizer, min_steps=0, max_steps=1, prompt_lengths=[1, 1])
    rows = torch.tensor([[5, ids.reasoning_start, ids.step_start, ids.step_end],
                         [5, ids.reasoning_start, ids.step_end, ids.proceed]])
    got = allowed(proc(rows, uniform_logits(2, 420)))
    assert got == [{ids.reasoning_end}, {ids.step_start}]


def test_completion_start_detected_per_generation(tiny_tokenizer, ids):
    proc = StepBoundsLogitsProcessor(tiny_tokenizer)
    prompt = torch.tensor([[5, 6, 7]])
    assert allowed(proc(prompt, uniform_logits(1, 420)))[0] == {ids.reasoning_start}
    step1 = torch.cat([prompt, torch.tensor([[ids.reasoning_start]])], 1)
    assert len(allowed(proc(step1, uniform_logits(1, 420)))[0]) == 420
    # a shorter input is a new generation: its first call again forces reasoning_start
    assert allowed(proc(torch.tensor([[5, 6]]), uniform_logits(1, 420)))[0] == {ids.reasoning_start}
    proc.reset()
    assert allowed(proc(step1, uniform_logits(1, 420)))[0] == {ids.reasoning_start}


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"min_steps": -1}, "min_steps"),
        ({"max_steps": -2}, "max_steps"),
        ({"min_steps": 3, "max_steps": 2}, "min_steps"),
        ({"min_steps": 1.5}, "min_steps"),
        ({"max_steps": "4"}, "max_steps"),
        ({"min_steps": True}, "min_steps"),
        ({"prompt_lengths": [-1]}, "prompt_lengths"),
    ],
)
def test_validation_names_the_argument(tiny_tokenizer, kwargs, name):
    for cls in (StepBoundsLogitsProcessor, FormatLogitsProcessor):
        with pytest.raises(ValueError, match=name):
            cls(tiny_tokenizer, **kwargs)
    with pytest.raises(ValueError, match="max_reasoning_tokens"):
        FormatLogitsProcessor(tiny_tokenizer, max_reasoning_tokens=0)


def _reasoning_part(ids_list: list[int], ids: ReasoningTokenIds) -> list[int]:
    return ids_list[: ids_list.index(ids.reasoning_end) + 1] if ids.reasoning_end in ids_list else ids_list


def _check_step_bound_invariants(completion: list[int], ids: ReasoningTokenIds, lo: int, hi: int) -> None:
    assert completion[0] == ids.reasoning_start
    r = _reasoning_part(completion, ids)
    n = 0
    for a, b in zip(r, r[1:], strict=False):
        if a in (ids.proceed, ids.backtrack):
            assert b == ids.step_start
        if a == ids.step_end:
            n += 1
            if n >= hi:
                assert b == ids.reasoning_end
            elif n < lo:
                assert b in (ids.proceed, ids.backtrack)
            else:
                assert b in (ids.proceed, ids.backtrack, ids.reasoning_end)
    assert n <= hi


def _left_padded_batch(tokenizer, texts):
    return tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)


def test_step_bounds_in_model_generate_left_padded(tiny_tokenizer, tiny_model, ids):
    batch = _left_padded_batch(tiny_tokenizer, ["hi", "Use the numbers 3, 5, 7 and 11 to reach 24 please now"])
    assert batch["attention_mask"][0, 0] == 0  # really left padded
    proc = StepBoundsLogitsProcessor(tiny_tokenizer, min_steps=1, max_steps=2)
    boost = BoostReasoning([ids.step_end, ids.proceed, ids.backtrack, ids.reasoning_end], 4.0)
    torch.manual_seed(0)
    out = tiny_model.generate(**batch, logits_processor=LogitsProcessorList([boost, proc]), do_sample=True,
                              max_new_tokens=60, top_k=0, pad_token_id=tiny_tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    for row in out[:, width:].tolist():
        _check_step_bound_invariants(row, ids, 1, 2)
    assert any(ids.reasoning_end in row for row in out[:, width:].tolist())


def test_step_bounds_beam_search(tiny_tokenizer, tiny_model, ids):
    batch = _left_padded_batch(tiny_tokenizer, ["hi there", "Reach 24 with 3 5 7"])
    proc = StepBoundsLogitsProcessor(tiny_tokenizer, max_steps=1)
    boost = BoostReasoning([ids.step_end, ids.proceed, ids.backtrack], 8.0)
    out = tiny_model.generate(**batch, logits_processor=LogitsProcessorList([boost, proc]), num_beams=3,
                              num_return_sequences=3, do_sample=False, max_new_tokens=12,
                              pad_token_id=tiny_tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    for row in out[:, width:].tolist():
        _check_step_bound_invariants(row, ids, 0, 1)


def _sample_with(proc, tokenizer, ids, *, steps: int, boost: float, temperature: float, seed: int) -> list[int]:
    """Decode with random logits (no model) under ``proc``; return the completion ids."""
    g = torch.Generator().manual_seed(seed)
    vocab = len(tokenizer) + 3
    seq = torch.tensor([[11, 12, 13]])
    structural = ids.all() + [tokenizer.eos_token_id]
    for _ in range(steps):
        scores = torch.randn(1, vocab, generator=g) * 3
        scores[0, structural] += boost
        out = proc(seq, scores / temperature)
        probs = torch.softmax(out, -1)
        tok = torch.multinomial(probs, 1, generator=g)
        seq = torch.cat([seq, tok], 1)
        if tok.item() == tokenizer.eos_token_id:
            break
    return seq[0, 3:].tolist()


@pytest.mark.parametrize("seed", range(12))
def test_format_random_logits_always_parse(tiny_tokenizer, ids, seed):
    g = torch.Generator().manual_seed(1000 + seed)
    lo = int(torch.randint(0, 3, (1,), generator=g))
    hi = lo + int(torch.randint(0, 3, (1,), generator=g))
    boost = float(torch.rand(1, generator=g) * 20)  # from "fields run to the budget" to many short steps
    proc = FormatLogitsProcessor(tiny_tokenizer, min_steps=lo, max_steps=hi, max_reasoning_tokens=400,
                                 prompt_lengths=3)
    completion = _sample_with(proc, tiny_tokenizer, ids, steps=600, boost=boost, temperature=5.0, seed=seed)
    text = tiny_tokenizer.decode([t for t in completion if t != tiny_tokenizer.eos_token_id],
                                 skip_special_tokens=False)
    path = parse(text)
    assert path.ok, [str(p) for p in path.problems]
    assert path.complete
    n_steps = len(path.steps)
    assert n_steps <= hi
    reasoning = _reasoning_part(completion, ids)
    assert len(reasoning) <= 400
    if len(reasoning) < 400 - 24:  # the budget did not cut it short
        assert n_steps >= lo
    # only the step open when the budget ran out may have empty (forced) fields
    assert all(s.name and s.thought and s.summary and s.reflection for s in path.steps[:-1])


def test_format_budget_forces_closing_tokens_in_order(tiny_tokenizer, ids):
    budget = 30
    proc = FormatLogitsProcessor(tiny_tokenizer, max_reasoning_tokens=budget, prompt_lengths=3)
    completion = _sample_with(proc, tiny_tokenizer, ids, steps=80, boost=-20.0, temperature=1.0, seed=3)
    reasoning = _reasoning_part(completion, ids)
    assert len(reasoning) == budget  # text-only logits: the budget decides where reasoning ends
    # the name field was open when the budget ran out: it is closed, the other fields come empty
    assert reasoning[-9:] == [ids.name_end, ids.thought_start, ids.thought_end, ids.summary_start,
                              ids.summary_end, ids.reflection_start, ids.reflection_end, ids.step_end,
                              ids.reasoning_end]
    text = tiny_tokenizer.decode([t for t in completion if t != tiny_tokenizer.eos_token_id], skip_special_tokens=False)
    assert parse(text).ok


def test_format_min_steps_keeps_the_models_odds_of_proceed_and_backtrack(tiny_tokenizer, ids):
    # below min_steps the end is banned and nothing moves to proceed: after a step that reached the
    # answer the model's own choice (here backtrack, 4:1 in softmax terms) is what the search does next
    proc = FormatLogitsProcessor(tiny_tokenizer, min_steps=2, prompt_lengths=0)
    step = [ids.step_start]
    for s, e in ((ids.name_start, ids.name_end), (ids.thought_start, ids.thought_end),
                 (ids.summary_start, ids.summary_end), (ids.reflection_start, ids.reflection_end)):
        step += [s, 9, e]
    seq = torch.tensor([[ids.reasoning_start] + step + [ids.step_end]])
    scores = torch.zeros(1, 430)
    scores[0, ids.reasoning_end] = 3.0
    scores[0, ids.backtrack] = math.log(4.0)
    out = proc(seq, scores)
    assert allowed(out)[0] == {ids.proceed, ids.backtrack}
    probs = out.softmax(-1)[0]
    assert probs[ids.backtrack].item() == pytest.approx(0.8)
    assert probs[ids.proceed].item() == pytest.approx(0.2)
    # the step-bounds processor makes the same choice
    bounds = StepBoundsLogitsProcessor(tiny_tokenizer, min_steps=2, prompt_lengths=0)
    assert torch.allclose(bounds(seq, scores).softmax(-1), probs.unsqueeze(0))


def test_format_grammar_states(tiny_tokenizer, ids):
    proc = FormatLogitsProcessor(tiny_tokenizer, prompt_lengths=0)
    eos = tiny_tokenizer.eos_token_id
    vocab = 430
    text_ids = {i for i in range(len(tiny_tokenizer)) if i not in set(tiny_tokenizer.added_tokens_decoder)}

    def nxt(seq):
        return allowed(proc(torch.tensor([seq]), uniform_logits(1, vocab)))[0]

    rs = [ids.reasoning_start]
    assert nxt(rs) == {ids.step_start}
    assert nxt(rs + [ids.step_start]) == {ids.name_start}
    assert nxt(rs + [ids.step_start, ids.name_start]) == text_ids  # a field needs text first
    assert nxt(rs + [ids.step_start, ids.name_start, 9]) == text_ids | {ids.name_end}
    assert nxt(rs + [ids.step_start, ids.name_start, 9, ids.name_end]) == {ids.thought_start}
    full = rs + [ids.step_start, ids.name_start, 9, ids.name_end, ids.thought_start, 9, ids.thought_end,
                 ids.summary_start, 9, ids.summary_end, ids.reflection_start, 9, ids.reflection_end]
    assert nxt(full) == {ids.step_end}
    assert nxt(full + [ids.step_end]) == {ids.proceed, ids.backtrack, ids.reasoning_end}
    assert nxt(full + [ids.step_end, ids.reasoning_end]) == text_ids | {eos}
    assert nxt(full + [ids.step_end, ids.reasoning_end, 9, 10]) == text_ids | {eos}
    assert len(nxt(full + [ids.step_end, ids.reasoning_end, 9, eos])) == vocab  # finished rows untouched
    # a long thought (past the search window) still knows which field it is in
    long = rs + [ids.step_start, ids.name_start, 9, ids.name_end, ids.thought_start] + [9] * 300
    assert nxt(long) == text_ids | {ids.thought_end}


def test_format_processor_under_beam_search(tiny_tokenizer, tiny_model, ids):
    batch = _left_padded_batch(tiny_tokenizer, ["hi there", "Reach 24 with 3 5 7"])
    proc = FormatLogitsProcessor(tiny_tokenizer, max_steps=1, max_reasoning_tokens=16)
    out = tiny_model.generate(**batch, logits_processor=LogitsProcessorList([proc]), num_beams=3,
                              num_return_sequences=3, do_sample=False, max_new_tokens=20,
                              pad_token_id=tiny_tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    for row in out[:, width:].tolist():
        row = row[: row.index(tiny_tokenizer.eos_token_id)] if tiny_tokenizer.eos_token_id in row else row
        path = parse(tiny_tokenizer.decode(row, skip_special_tokens=False))
        assert path.ok and path.complete and len(path.steps) == 1, [str(p) for p in path.problems]


@pytest.mark.parametrize("seed", range(6))
def test_format_random_logits_many_steps_and_backtracks(tiny_tokenizer, ids, seed):
    proc = FormatLogitsProcessor(tiny_tokenizer, min_steps=4, prompt_lengths=3)
    completion = _sample_with(proc, tiny_tokenizer, ids, steps=700, boost=18.0, temperature=4.0, seed=seed)
    text = tiny_tokenizer.decode([t for t in completion if t != tiny_tokenizer.eos_token_id],
                                 skip_special_tokens=False)
    path = parse(text)
    assert path.ok, [str(p) for p in path.problems]
    assert path.complete and len(path.steps) >= 4  # min_steps holds; backtracks occur in most seeds


@pytest.mark.parametrize("budget,temperature,seed", [(32, 1.0, 0), (48, 5.0, 1), (100, 1.5, 2), (300, 5.0, 3),
                                                     (300, 1.0, 4), (64, 1.5, 5)])
def test_format_completion_ends_within_max_new_tokens(tiny_tokenizer, ids, budget, temperature, seed):
    """Random logits that rarely close anything: the budget closes the step, the reasoning, the answer."""
    proc = FormatLogitsProcessor(tiny_tokenizer, prompt_lengths=3, max_new_tokens=budget)
    completion = _sample_with(proc, tiny_tokenizer, ids, steps=budget + 50, boost=-2.0, temperature=temperature,
                              seed=seed)
    assert len(completion) <= budget and completion[-1] == tiny_tokenizer.eos_token_id
    reasoning = _reasoning_part(completion, ids)
    assert len(completion) - len(reasoning) >= 2  # room was left for an answer and eos
    path = parse(tiny_tokenizer.decode(completion[:-1], skip_special_tokens=False))
    assert path.ok and path.complete, [str(p) for p in path.problems]


def test_format_field_and_answer_caps(tiny_tokenizer, ids):
    """Text-only logits: every field is closed at its cap, and the answer at its own."""
    caps = (3, 7, 4, 5)
    proc = FormatLogitsProcessor(tiny_tokenizer, max_steps=2, prompt_lengths=3, field_caps=caps, max_answer_tokens=6)
    completion = _sample_with(proc, tiny_tokenizer, ids, steps=300, boost=-30.0, temperature=1.0, seed=7)
    starts = [ids.name_start, ids.thought_start, ids.summary_start, ids.reflection_start]
    ends = [ids.name_end, ids.thought_end, ids.summary_end, ids.reflection_end]
    for f in range(4):
        spans = [(k, completion.index(ends[f], k)) for k, t in enumerate(completion) if t == starts[f]]
        assert spans and all(e - k - 1 == caps[f] for k, e in spans)  # closed exactly at the cap
    assert completion[-1] == tiny_tokenizer.eos_token_id
    assert len(completion) - 1 - (completion.index(ids.reasoning_end) + 1) == 6
    assert parse(tiny_tokenizer.decode(completion[:-1], skip_special_tokens=False)).ok


def test_format_budget_rejects_bad_options(tiny_tokenizer):
    with pytest.raises(ValueError, match="max_new_tokens"):
        FormatLogitsProcessor(tiny_tokenizer, max_new_tokens=0)
    with pytest.raises(ValueError, match="field_caps"):
        FormatLogitsProcessor(tiny_tokenizer, field_caps=(1, 2, 3))


def test_format_strict_generate_on_a_random_model_always_parses(tiny_tokenizer, tiny_model):
    """The harshest case: an untrained model, sampled at temperature 1.0 and 1.5, with and without a
    system prompt, through `steiner.infer.generate`: every completion ends with eos and parses cleanly."""
    from steiner.infer import generate

    user = [{"role": "user", "content": "Reach 24 with 3 5 7 11."}]
    convos = [user, [{"role": "system", "content": "You are a careful assistant. Think step by step."}, *user]]
    for temperature in (1.0, 1.5):
        gens = generate(tiny_model, tiny_tokenizer, convos, n=4, max_new_tokens=64, temperature=temperature,
                         seed=11, format_strict=True)
        for g in (g for per in gens for g in per):
            assert g.finish_reason == "stop" and g.completion_tokens <= 64
            assert g.path.ok and g.path.complete, [str(p) for p in g.path.problems]


def test_format_carried_state_matches_a_fresh_search(tiny_tokenizer, ids):
    """The state carried from call to call equals a fresh window search, also when rows are reordered
    between calls (beam search) or the batch changes (the serve engine regroups rows). Rows past their
    eos (padding, ignored by every caller) are left out of the comparison."""
    g = torch.Generator().manual_seed(0)
    proc = FormatLogitsProcessor(tiny_tokenizer, min_steps=1, max_steps=3, prompt_lengths=3, max_new_tokens=120,
                                 field_caps=(4, 9, 5, 5), max_answer_tokens=8)
    seqs = torch.tensor([[11, 12, 13]] * 6)
    structural = ids.all() + [tiny_tokenizer.eos_token_id]
    for step in range(110):
        if step in (30, 70):
            seqs = seqs[torch.randperm(seqs.shape[0], generator=g)]  # rows reordered
        if step == 50:
            seqs = seqs[:4]  # rows dropped
        fresh = FormatLogitsProcessor(tiny_tokenizer, min_steps=1, max_steps=3, prompt_lengths=3,
                                      max_new_tokens=120, field_caps=(4, 9, 5, 5), max_answer_tokens=8)
        scores = torch.randn(seqs.shape[0], len(tiny_tokenizer) + 2, generator=g) * 3
        scores[:, structural] += 2.0
        out = proc(seqs, scores)
        live = ~(seqs[:, 3:] == tiny_tokenizer.eos_token_id).any(1)
        assert torch.equal(out[live], fresh(seqs, scores)[live]), step
        tok = torch.multinomial(torch.softmax(out, -1), 1, generator=g)
        tok[~live] = tiny_tokenizer.pad_token_id
        seqs = torch.cat([seqs, tok], 1)
    assert (~live).sum() >= 2  # some rows finished and the others kept going
