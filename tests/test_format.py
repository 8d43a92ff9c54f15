"""The reasoning format: token list, render/parse round trip, lenient and strict parsing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steiner.format import (
    BACKTRACK,
    PROCEED,
    REASONING_END,
    REASONING_START,
    SPECIAL_TOKENS,
    STEP_END,
    STEP_START,
    FormatError,
    ReasoningPath,
    Step,
    parse,
    path_from_dict,
    path_to_dict,
    render,
)

STEINER_ORDER = [
    "<|reasoning_start|>",
    "<|reasoning_end|>",
    "<|reasoning_proceed|>",
    "<|reasoning_backtrack|>",
    "<|reasoning_step_start|>",
    "<|reasoning_step_end|>",
    "<|reasoning_step_name_start|>",
    "<|reasoning_step_name_end|>",
    "<|reasoning_step_thought_start|>",
    "<|reasoning_step_thought_end|>",
    "<|reasoning_step_summary_start|>",
    "<|reasoning_step_summary_end|>",
    "<|reasoning_step_reflection_start|>",
    "<|reasoning_step_reflection_end|>",
]


def test_special_tokens_are_steiners_in_order():
    assert SPECIAL_TOKENS == STEINER_ORDER


def sample_path() -> ReasoningPath:
    return ReasoningPath(
        steps=[
            Step("Try 3+5", "3+5=8", "8 left with 7, 11", "promising", "proceed"),
            Step("Try 8*7", "8*7=56", "56, 11 left", "too big: dead end", "backtrack", returns_to=1),
            Step("Try 11-7", "11-7=4", "4 and 8 left", "4*8 is not 24; but (11-7)*... ok", "end"),
        ],
        answer="(11-7)*(3+3)",
    )


def test_render_layout():
    text = render(sample_path())
    assert text.startswith(REASONING_START + STEP_START)
    assert text.count(STEP_START) == 3 and text.count(STEP_END) == 3
    assert f"{STEP_END}{PROCEED}{STEP_START}" in text
    assert f"{STEP_END}{BACKTRACK}{STEP_START}" in text
    assert text.endswith(f"{STEP_END}{REASONING_END}(11-7)*(3+3)")
    assert "Back to step 1: Try 11-7" in text


def test_round_trip_and_active_steps():
    path = sample_path()
    back = parse(render(path))
    assert back == path and back.ok
    assert [s.name for s in back.active_steps()] == ["Try 3+5", "Try 11-7"]
    assert back.num_backtracks == 1


def test_dict_round_trip():
    path = sample_path()
    path.steps[0].meta["node"] = "n3"
    again = path_from_dict(path_to_dict(path))
    assert again == path and again.steps[0].meta["node"] == "n3"


def test_summaries_only_render():
    text = render(sample_path(), summaries_only=True)
    assert "Try 3+5" not in text and "8 left with 7, 11" in text
    assert text.endswith(REASONING_END + "(11-7)*(3+3)")


@pytest.mark.parametrize(
    ("bad", "msg"),
    [
        (ReasoningPath([Step(decision="end"), Step(decision="end")], "x"), "only allowed on the last"),
        (ReasoningPath([Step(decision="proceed")], "x"), "must end with decision 'end'"),
        (ReasoningPath([Step(decision="end")], None), "needs an answer"),
        (ReasoningPath([Step(name="a<|reasoning_end|>", decision="end")], "x"), "special token"),
        (ReasoningPath([Step(decision="backtrack", returns_to=1), Step(decision="end")], "x"), "returns_to"),
        (ReasoningPath([Step(decision="maybe")], None), "decision must be one of"),
    ],
)
def test_render_rejects_invalid_paths(bad, msg):
    with pytest.raises(FormatError, match=msg):
        render(bad)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "empty"),
        ("just an answer", "no_reasoning"),
        (REASONING_START + STEP_START + "<|reasoning_step_name_start|>half", "truncated"),
        (REASONING_START + STEP_START + "<|reasoning_step_name_start|>a" + STEP_END + REASONING_END + "x", "unclosed_field"),
        (REASONING_START + REASONING_START + REASONING_END + "x", "repeated_token"),
        (REASONING_START + STEP_START + STEP_START, "missing_step_end"),
        (REASONING_START + "chatter" + REASONING_END + "x", "stray_text"),
        ("preface" + REASONING_START + REASONING_END + "x", "text_before_reasoning"),
        (REASONING_START + REASONING_END + "x" + STEP_END, "token_in_answer"),
    ],
)
def test_parse_names_problems(text, code):
    path = parse(text)
    assert code in {p.code for p in path.problems}
    with pytest.raises(FormatError, match=code):
        parse(text, strict=True)


def test_parse_problem_positions_point_into_text():
    text = REASONING_START + "oops" + REASONING_END + "x"
    (problem,) = parse(text).problems
    assert problem.code == "stray_text" and text[problem.pos : problem.pos + 4] == "oops"


def test_parse_recovers_cut_off_output():
    full = render(sample_path())
    cut = full[: full.index("Try 11-7") + 3]
    path = parse(cut)
    assert len(path.steps) == 3 and path.answer is None
    assert path.steps[0] == sample_path().steps[0]
    assert path.steps[2].decision is None


# --- property tests -----------------------------------------------------------------------------

field_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30).filter(
    lambda s: "<|" not in s and not s.startswith("Back to step")
)


@st.composite
def paths(draw):
    n = draw(st.integers(0, 6))
    steps = []
    for i in range(1, n + 1):
        last = i == n
        decision = "end" if last else draw(st.sampled_from(["proceed", "backtrack"]))
        returns_to = draw(st.one_of(st.none(), st.integers(0, i - 1))) if decision == "backtrack" else None
        steps.append(Step(draw(field_text), draw(field_text), draw(field_text), draw(field_text), decision, returns_to))
    return ReasoningPath(steps, draw(field_text))


@given(paths())
@settings(max_examples=200, deadline=None)
def test_render_then_parse_is_identity(path):
    back = parse(render(path))
    assert back == path
    assert back.ok, back.problems


@given(st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_parse_never_raises_on_text(text):
    parse(text)


@given(st.lists(st.one_of(st.sampled_from(SPECIAL_TOKENS), st.text(max_size=5)), max_size=40))
@settings(max_examples=300, deadline=None)
def test_parse_never_raises_on_token_soup(parts):
    path = parse("".join(parts))
    for p in path.problems:
        assert 0 <= p.pos <= len("".join(parts))
