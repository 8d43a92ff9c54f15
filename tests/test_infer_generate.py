"""`steiner.infer.generate` on the untrained tiny model: shapes, bookkeeping, well-formed output."""

from __future__ import annotations

import pytest

from steiner.format import REASONING_END
from steiner.infer import Generation, generate

CONVS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "user", "content": "Use the numbers 3, 5, 7 and 11 to reach 24."}],
]


def test_generate_format_strict_is_well_formed(tiny_model, tiny_tokenizer):
    res = generate(tiny_model, tiny_tokenizer, CONVS, n=2, max_new_tokens=90, temperature=1.3, seed=0,
                   format_strict=True, max_steps=2, max_reasoning_tokens=50, batch_size=3)
    assert [len(r) for r in res] == [2, 2]
    for r in res:
        for g in r:
            assert isinstance(g, Generation)
            assert g.path.ok, [str(p) for p in g.path.problems]
            assert 1 <= len(g.path.steps) <= 2
            assert g.text == tiny_tokenizer.decode(g.token_ids, skip_special_tokens=False)
            assert g.reasoning.endswith(REASONING_END) and g.text.startswith(g.reasoning)
            assert g.answer == g.text[len(g.reasoning):].strip()
            assert g.reasoning_tokens <= 50
            assert g.reasoning_tokens == g.token_ids.index(tiny_tokenizer.convert_tokens_to_ids(REASONING_END)) + 1
            if g.finish_reason == "stop":
                assert g.completion_tokens == len(g.token_ids) + 1  # the eos counts
            else:
                assert g.completion_tokens == len(g.token_ids) == 90


def test_generate_seed_is_reproducible_and_greedy_is_deterministic(tiny_model, tiny_tokenizer):
    kw = dict(max_new_tokens=20, max_steps=1)
    a = generate(tiny_model, tiny_tokenizer, CONVS[:1], seed=5, **kw)
    b = generate(tiny_model, tiny_tokenizer, CONVS[:1], seed=5, **kw)
    assert a[0][0].token_ids == b[0][0].token_ids
    g1 = generate(tiny_model, tiny_tokenizer, CONVS, temperature=0, **kw)
    g2 = generate(tiny_model, tiny_tokenizer, CONVS[::-1], temperature=0, **kw)
    # greedy output does not depend on the batch's padding
    assert g1[0][0].token_ids == g2[1][0].token_ids
    assert g1[0][0].text.startswith("<|reasoning_start|>")


def test_generate_refill_matches_one_pass_and_keeps_the_processors_on_track(tiny_model, tiny_tokenizer):
    # greedy, 5 rows through a batch of 2: refilled every 3 tokens (finished rows leave, waiting ones
    # join, rows going on are fed again) the completions are the ones a single pass per batch writes;
    # the format processor still sees where each completion started (max_steps, the token budget)
    convs = [CONVS[i % 2] + [{"role": "user", "content": "x" * i}] for i in range(5)]
    kw = dict(max_new_tokens=40, temperature=0, format_strict=True, max_steps=2, max_reasoning_tokens=25,
              batch_size=2)
    one = generate(tiny_model, tiny_tokenizer, convs, refill_tokens=None, cache_implementation=None, **kw)
    refilled = generate(tiny_model, tiny_tokenizer, convs, refill_tokens=3, **kw)
    assert [[g.token_ids for g in r] for r in refilled] == [[g.token_ids for g in r] for r in one]
    assert all(g.path.ok and 1 <= len(g.path.steps) <= 2 and g.reasoning_tokens <= 25 for r in refilled for g in r)
    with pytest.raises(ValueError, match="refill_tokens"):
        generate(tiny_model, tiny_tokenizer, convs, refill_tokens=0, **kw)


def test_generate_stop_strings(tiny_model, tiny_tokenizer):
    res = generate(tiny_model, tiny_tokenizer, CONVS[:1], max_new_tokens=30, seed=1, format_strict=True,
                   stop=["<|reasoning_step_name_start|>"])
    g = res[0][0]
    assert g.finish_reason == "stop"
    assert g.text == "<|reasoning_start|><|reasoning_step_start|>"


@pytest.mark.parametrize("kwargs, name", [({"n": 0}, "n"), ({"top_p": 0}, "top_p"), ({"temperature": -1}, "temperature"),
                                          ({"max_steps": -1}, "max_steps")])
def test_generate_rejects_bad_arguments(tiny_model, tiny_tokenizer, kwargs, name):
    with pytest.raises(ValueError, match=name):
        generate(tiny_model, tiny_tokenizer, CONVS, max_new_tokens=2, **kwargs)


def test_generate_rejects_bad_conversation(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="conversation 1"):
        generate(tiny_model, tiny_tokenizer, [CONVS[0], "hello"], max_new_tokens=2)
