"""Reasoning parser (whole text and streamed), reasoning_stats and the pretty printer."""

from __future__ import annotations

import random

import pytest

from steiner.format import REASONING_END, ReasoningPath, Step, parse, render
from steiner.infer import SteinerReasoningParser, format_reasoning, reasoning_stats

PATH = ReasoningPath(
    steps=[
        Step("Try 3+5", "3+5=8, left 7, 8, 11", "3+5=8", "8 and 11 are far from 24", "proceed"),
        Step("Then 8*7", "8*7=56, too big", "56", "dead end", "backtrack", returns_to=0),
        Step("Try 11-7", "11-7=4", "4", "4*6 would work", "proceed"),
        Step("Finish", "(11-7)*(3+3)... uses 3 twice; say 24", "24", "done", "end"),
    ],
    answer=" (11-7)*(3+3)=24",
)
TEXT = render(PATH)


@pytest.fixture(scope="module")
def parser(tiny_tokenizer):
    return SteinerReasoningParser(tiny_tokenizer)


def test_whole_text_split(parser):
    reasoning, content = parser.extract_reasoning_content(TEXT, request=None)
    assert reasoning.endswith(REASONING_END) and reasoning + content == TEXT
    assert content == PATH.answer
    assert parse(reasoning).steps == PATH.steps  # the reasoning keeps its tokens
    assert parser.extract_reasoning_content("just an answer", None) == (None, "just an answer")
    unfinished = TEXT[: TEXT.index(REASONING_END)]
    assert parser.extract_reasoning_content(unfinished, None) == (unfinished, None)


@pytest.mark.parametrize("seed", range(5))
def test_streaming_matches_whole_text(parser, tiny_tokenizer, seed):
    rng = random.Random(seed)
    ids = tiny_tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    # random-sized deltas of whole tokens, as vLLM streams them
    pieces, i = [], 0
    while i < len(ids):
        k = rng.randint(1, 6)
        pieces.append(ids[i : i + k])
        i += k
    prev_text, prev_ids, reasoning, content = "", [], [], []
    for piece in pieces:
        cur_ids = prev_ids + piece
        cur_text = tiny_tokenizer.decode(cur_ids, skip_special_tokens=False)
        delta = parser.extract_reasoning_content_streaming(prev_text, cur_text, cur_text[len(prev_text):],
                                                           prev_ids, cur_ids, piece)
        if delta is not None:
            assert delta.reasoning_content or delta.content
            reasoning.append(delta.reasoning_content or "")
            content.append(delta.content or "")
        prev_text, prev_ids = cur_text, cur_ids
    whole_r, whole_c = parser.extract_reasoning_content(TEXT, None)
    assert "".join(reasoning) == whole_r
    assert "".join(content) == whole_c


def test_token_id_helpers(parser, tiny_tokenizer):
    ids = tiny_tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    end = ids.index(parser.end_token_id)
    assert not parser.is_reasoning_end(ids[:end])
    assert parser.is_reasoning_end(ids)
    assert parser.extract_content_ids(ids) == ids[end + 1 :]
    assert parser.extract_content_ids(ids[:end]) == []
    assert parser.count_reasoning_tokens(ids) == end + 1
    assert tiny_tokenizer.decode(parser.extract_content_ids(ids)) == PATH.answer


def test_parser_needs_reasoning_tokens():
    from steiner.tokenizer import train_tokenizer

    plain = train_tokenizer(["a b c"] * 5, vocab_size=270, extend_with_reasoning=False)
    with pytest.raises(ValueError, match="reasoning_start"):
        SteinerReasoningParser(plain)


def test_reasoning_stats(tiny_tokenizer):
    stats = reasoning_stats(TEXT, tiny_tokenizer)
    reasoning_ids = tiny_tokenizer(TEXT[: TEXT.index(REASONING_END) + len(REASONING_END)],
                                   add_special_tokens=False)["input_ids"]
    assert stats == {"steps": 4, "backtracks": 1, "reasoning_tokens": len(reasoning_ids)}
    assert reasoning_stats("no reasoning here") == {"steps": 0, "backtracks": 0}


def test_format_reasoning_marks_backtracks():
    out = format_reasoning(PATH)
    assert "Step 1: Try 3+5" in out and "Step 4: Finish" in out
    assert "↩ back to the question" in out
    assert out.index("Step 2") < out.index("↩ back to the question") < out.index("Step 3")
    assert out.rstrip().endswith("Answer: (11-7)*(3+3)=24")
    path = ReasoningPath(steps=[Step("a", "b", "c", "d", "proceed"), Step("e", "f", "g", "h", "backtrack", returns_to=1),
                                Step("i", "j", "k", "l", "end")], answer="x")
    assert "↩ back to step 1" in format_reasoning(render(path))
    broken = format_reasoning(TEXT[:60])
    assert "Format problems" in broken and "did not end" in broken
