"""One decode-options dataclass and one processor factory, shared by generate, eval and serve."""

from __future__ import annotations

import pytest

from steiner.infer import DecodeOptions, FormatLogitsProcessor, StepBoundsLogitsProcessor, make_processors


def test_bad_options_name_the_field():
    for kwargs, field in (({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"),
                          ({"max_new_tokens": 0}, "max_new_tokens"), ({"min_steps": 3, "max_steps": 2}, "min_steps"),
                          ({"max_reasoning_tokens": 0}, "max_reasoning_tokens"), ({"seed": "x"}, "seed")):
        with pytest.raises(ValueError, match=field):
            DecodeOptions(**kwargs)


def test_one_factory_decides_the_processors(tiny_tokenizer):
    assert make_processors(tiny_tokenizer, DecodeOptions()) == []
    [sb] = make_processors(tiny_tokenizer, DecodeOptions(min_steps=1, max_steps=4))
    assert isinstance(sb, StepBoundsLogitsProcessor) and (sb.min_steps, sb.max_steps) == (1, 4)
    [always] = make_processors(tiny_tokenizer, DecodeOptions(), step_bounds_always=True, prompt_lengths=1)
    assert isinstance(always, StepBoundsLogitsProcessor) and always.max_steps is None
    # a reasoning budget implies the format processor, which also finishes within max_new_tokens
    [fmt] = make_processors(tiny_tokenizer, DecodeOptions(max_new_tokens=200, max_reasoning_tokens=64, max_steps=3))
    assert isinstance(fmt, FormatLogitsProcessor)
    assert (fmt.max_new_tokens, fmt.max_reasoning_tokens, fmt.max_steps) == (200, 64, 3)
    assert fmt.reasoning_budget == 64  # min(64, 200 - the answer's reserve of 16)
    [fmt] = make_processors(tiny_tokenizer, DecodeOptions(max_new_tokens=60, format_strict=True))
    assert fmt.reasoning_budget == 44


def test_eval_and_serve_settings_are_decode_options():
    from steiner.eval.backends import GenSettings
    from steiner.serve.engine import SamplingParams

    g = GenSettings(0.5, 0.9, 100, 1, 3, True, 50, 7)  # eval builds it positionally
    assert isinstance(g, DecodeOptions) and g.strict and g.seed == 7
    assert g.key() == "147f380b"  # the cache key of eval samples is unchanged
    assert GenSettings().temperature == 0.7 and GenSettings().seed == 0
    s = SamplingParams(max_new_tokens=10, n=2, stop=["x"])
    assert isinstance(s, DecodeOptions) and not s.strict
