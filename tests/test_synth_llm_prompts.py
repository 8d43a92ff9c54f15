"""The teacher prompts, the strict reply parser (each malformed reply has a named reason) and the disk cache."""

from __future__ import annotations

import json
import threading

import pytest

from steiner.format import ReasoningPath, Step, render
from steiner.synth.cache import DiskCache, request_key
from steiner.synth.prompts import (
    TeacherReplyError,
    extract_json,
    forward_messages,
    language_of,
    language_share,
    parse_forward_reply,
    parse_reference_reply,
    parse_returns_to,
    parse_reveal_reply,
    reference_messages,
    repair_json_escapes,
    reply_schema,
    response_format,
    reveal_messages,
)

GOOD = {"name": "Add", "thought": "3+4=7", "summary": "7", "reflection": "fine"}


def reply(**obj) -> str:
    return json.dumps(obj)


@pytest.mark.parametrize(("text", "code", "message"), [
    ("", "empty", "reply is empty"),
    ("I think the answer is 7.", "no_json", "no JSON object"),
    ('{"steps": [ {"name": "a",', "bad_json", "JSON is invalid"),
    ('["a", "b"]', "no_json", "no JSON object"),
    (reply(final_answer="7"), "no_steps", "reply has no 'steps' list"),
    (reply(steps="one step", final_answer="7"), "no_steps", "no 'steps' list"),
    (reply(steps=[], final_answer="7"), "empty_steps", "'steps' is empty"),
    (reply(steps=["just text"], final_answer="7"), "bad_step", "step 1 is not an object"),
    (reply(steps=[GOOD, {**GOOD, "thought": None}], final_answer="7"), "missing_field", "step 2 'thought' must be a string"),
    (reply(steps=[{**GOOD, "summary": 3}], final_answer="7"), "missing_field", "'summary' must be a string, got int"),
    (reply(steps=[{**GOOD, "name": "  "}], final_answer="7"), "empty_field", "step 1 'name' is empty"),
    (reply(steps=[{**GOOD, "thought": "x <|reasoning_end|> y"}], final_answer="7"), "special_token", "special token"),
    (reply(steps=[GOOD]), "no_final_answer", "no 'final_answer'"),
    (reply(steps=[GOOD], final_answer=""), "empty_field", "'final_answer' is empty"),
])
def test_malformed_reference_replies_name_their_reason(text, code, message):
    with pytest.raises(TeacherReplyError, match=message) as err:
        parse_reference_reply(text)
    assert err.value.code == code


def test_reference_reply_in_fences_with_prose_renders():
    text = "Here you go:\n```json\n" + reply(steps=[GOOD, {**GOOD, "name": "Back to step 1: Redo"}], final_answer=7) + "\n```"
    steps, answer = parse_reference_reply(text)
    assert answer == "7" and [s.decision for s in steps] == ["proceed", "end"]
    assert steps[1].name == "Redo"  # the renderer writes backtrack prefixes itself
    assert render(ReasoningPath(steps, answer)).endswith("7")


def test_extract_json_skips_a_broken_object_before_a_good_one():
    assert extract_json('{oops} then {"steps": 1}') == {"steps": 1}


def test_forward_reply_caps_steps_and_keeps_a_claimed_answer():
    steps = parse_forward_reply(reply(steps=[GOOD, GOOD, GOOD]), 2)
    assert len(steps) == 2 and {s.decision for s in steps} == {"proceed"}
    claimed = parse_forward_reply(reply(steps=[GOOD], final_answer="7"), 3)
    assert claimed[-1].decision == "end" and claimed[-1].meta["claimed_answer"] == "7"


@pytest.mark.parametrize(("returns_to", "expected"), [(None, None), (0, 0), (2, 2), ("1", 1), (3, None)])
def test_reveal_returns_to(returns_to, expected):
    rev = parse_reveal_reply(reply(reflection="r", returns_to=returns_to, steps=[GOOD], final_answer="7"), 3)
    assert rev.returns_to == expected and rev.steps[-1].decision == "end" and rev.final_answer == "7"


@pytest.mark.parametrize(("obj", "code"), [
    ({"returns_to": 1, "steps": [GOOD], "final_answer": "7"}, "no_reflection"),
    ({"reflection": "r", "steps": [GOOD], "final_answer": "7"}, "bad_returns_to"),
    ({"reflection": "r", "returns_to": 4, "steps": [GOOD], "final_answer": "7"}, "bad_returns_to"),
    ({"reflection": "r", "returns_to": -1, "steps": [GOOD], "final_answer": "7"}, "bad_returns_to"),
    ({"reflection": "r", "returns_to": True, "steps": [GOOD], "final_answer": "7"}, "bad_returns_to"),
    ({"reflection": "r", "returns_to": 1, "steps": [], "final_answer": "7"}, "empty_steps"),
    ({"reflection": "r", "returns_to": 1, "steps": [GOOD]}, "no_final_answer"),
])
def test_malformed_reveal_replies(obj, code):
    with pytest.raises(TeacherReplyError) as err:
        parse_reveal_reply(json.dumps(obj), 3)
    assert err.value.code == code


def test_reveal_of_a_right_finished_attempt_needs_no_steps():
    rev = parse_reveal_reply(reply(reflection="All correct.", returns_to=None, steps=[], final_answer="7"), 2)
    assert rev.steps == [] and rev.returns_to is None


def test_prompts_carry_the_task_and_hide_the_answer_from_forward():
    prefix = [Step(name="Try 3*4", thought="3*4=12", summary="12", reflection="ok", decision="backtrack", returns_to=0),
              Step(name="Try 6-3", thought="6-3=3", summary="3", reflection="hm")]
    ref = reference_messages("QUESTION-X", "ANSWER-Y", max_steps=5)
    fwd = forward_messages("QUESTION-X", prefix, 3)
    rev = reveal_messages("QUESTION-X", "ANSWER-Y", prefix)
    for msgs in (ref, fwd, rev):
        assert [m["role"] for m in msgs] == ["system", "user"] and "QUESTION-X" in msgs[1]["content"]
    assert "ANSWER-Y" in ref[1]["content"] and "2 to 5 steps" in ref[1]["content"]
    assert "ANSWER-Y" not in json.dumps(fwd) and "at most 3 more steps" in fwd[1]["content"]
    assert "Step 2: Try 6-3" in fwd[1]["content"] and "went back to step 0" in fwd[1]["content"]
    assert "ANSWER-Y" in rev[1]["content"] and "(step 2)" in rev[1]["content"]
    with pytest.raises(ValueError, match="n_steps"):
        forward_messages("q", prefix, 0)


def test_one_shot_examples_parse_with_our_own_parser():
    """The example replies shown to the teacher must be valid under the parser that judges its replies."""
    for msgs, parse in [(reference_messages("q", "a"), parse_reference_reply),
                        (forward_messages("q", [], 2), lambda t: parse_forward_reply(t, 2)),
                        (reveal_messages("q", "a", [Step()] * 2), lambda t: parse_reveal_reply(t, 2))]:
        example = msgs[1]["content"].split("Reply: ", 1)[1].split("\n\nNow your turn.")[0]
        assert parse(example)


def test_request_key_is_order_independent_and_content_sensitive():
    a = request_key({"model": "m", "messages": [{"role": "user", "content": "x"}], "seed": 1})
    assert a == request_key({"seed": 1, "messages": [{"content": "x", "role": "user"}], "model": "m"})
    assert a != request_key({"model": "m", "messages": [{"role": "user", "content": "x"}], "seed": 2})


def test_disk_cache_atomic_and_tolerant(tmp_path):
    cache = DiskCache(tmp_path / "c")
    key = request_key({"k": 1})
    assert cache.get(key) is None and key not in cache
    cache.put(key, {"reply": "hello"})
    assert cache.get(key) == {"reply": "hello"} and len(cache) == 1
    cache.path(key).write_text("{not json")
    assert cache.get(key) is None  # a damaged entry is a miss
    with pytest.raises(ValueError, match="hex digest"):
        cache.path("../escape")
    # many threads writing the same and different keys: every entry readable, no temp files left
    keys = [request_key({"k": i % 5}) for i in range(40)]
    threads = [threading.Thread(target=cache.put, args=(k, {"reply": k * 50})) for k in keys]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(cache.get(k) == {"reply": k * 50} for k in keys)
    assert not list((tmp_path / "c").glob("*/*.tmp"))


# ---------------------------------------------------------------- tolerant parsing (strong-model replies)

LATEX_REPLY = r'''{"steps": [{"name": "Setup", "thought": "We have $\frac{1}{2} \times 3$, $\nu = 2$, $\sqrt{2}$, \(x\), $\theta$, $\beta \neq 0$, $\rho \to \infty$ and $\binom{4}{2}$.\nNext line.", "summary": "Done \\frac{a}{b}.", "reflection": "tab:\there"}], "final_answer": "\frac{3}{2}"}'''


def test_latex_with_single_backslashes_is_kept_exactly():
    steps, answer = parse_reference_reply(LATEX_REPLY)
    assert steps[0].thought == (r"We have $\frac{1}{2} \times 3$, $\nu = 2$, $\sqrt{2}$, \(x\), $\theta$, "
                                r"$\beta \neq 0$, $\rho \to \infty$ and $\binom{4}{2}$." + "\nNext line.")
    assert steps[0].summary == r"Done \frac{a}{b}." and answer == r"\frac{3}{2}"
    assert steps[0].reflection == "tab:\there"  # a real JSON escape (tab + "here" is no LaTeX command) stays one
    assert "\x0c" not in steps[0].thought and "\t" not in steps[0].thought


def test_repair_keeps_valid_json_and_unicode_escapes():
    text = '{"a": "line\\nbreak \\u00e9 \\"q\\" \\\\frac \\/", "b": [1, 2]}'
    assert repair_json_escapes(text) == text
    assert json.loads(repair_json_escapes(text))["a"] == 'line\nbreak é "q" \\frac /'


def test_think_block_with_braces_is_skipped_and_the_object_with_the_keys_is_taken():
    text = ('<think>The schema is {"steps": [...]} and {"final_answer": "?"}; x^{2} {draft}</think>\n'
            'Note {"confidence": 0.9}\n```json\n' + reply(steps=[GOOD], final_answer="7") + "\n```\n"
            'Also {"unrelated": true}')
    steps, answer = parse_reference_reply(text)
    assert answer == "7" and steps[0].name == "Add"
    # a lone closing tag (the server stripped the opening one) and an unclosed block
    assert parse_reference_reply("draft {x}</think>" + reply(steps=[GOOD], final_answer="8"))[1] == "8"
    with pytest.raises(TeacherReplyError) as err:
        parse_reference_reply("<think>" + reply(steps=[GOOD], final_answer="8"))
    assert err.value.code == "empty"


def test_the_last_complete_object_wins_over_a_partial_one():
    text = reply(steps=[GOOD]) + "\nOn reflection:\n" + reply(steps=[{**GOOD, "name": "Final"}], final_answer="9")
    steps, answer = parse_reference_reply(text)
    assert steps[0].name == "Final" and answer == "9"


def test_null_reflections_are_accepted():
    steps, _ = parse_reference_reply(reply(steps=[{**GOOD, "reflection": None}, {k: v for k, v in GOOD.items()
                                                                                 if k != "reflection"}],
                                           final_answer="7"))
    assert [s.reflection for s in steps] == ["", ""]
    rev = parse_reveal_reply(reply(reflection=None, returns_to=None, steps=[], final_answer="7"), 2)
    assert rev.reflection == "" and rev.returns_to is None
    with pytest.raises(TeacherReplyError) as err:  # a backtrack must say why
        parse_reveal_reply(reply(reflection=None, returns_to=1, steps=[GOOD], final_answer="7"), 2)
    assert err.value.code == "missing_field"


@pytest.mark.parametrize(("value", "expected"), [("step 2", 2), ("Step 1", 1), ("steps 0", 0), (" 2 ", 2),
                                                 (1.0, 1), ("第2步", 2), ("null", None), ("None", None)])
def test_returns_to_spellings(value, expected):
    assert parse_returns_to(value, 3) == expected


@pytest.mark.parametrize("value", ["step two", "2 or 3", 1.5, [1], "step 5"])
def test_returns_to_ambiguous_spellings_are_rejected(value):
    with pytest.raises(TeacherReplyError) as err:
        parse_returns_to(value, 3)
    assert err.value.code == "bad_returns_to"


def test_reply_schemas_match_the_parser():
    """A reply built from each schema's shape parses; the schemas are strict-mode compatible."""
    for kind in ("reference", "forward", "reveal"):
        schema = reply_schema(kind)
        assert schema["additionalProperties"] is False and set(schema["required"]) == set(schema["properties"])
        assert response_format(kind, "json_schema")["json_schema"]["schema"] == schema
    assert reply_schema("reveal")["properties"]["returns_to"]["type"] == ["integer", "null"]
    assert response_format("forward", "json_object") == {"type": "json_object"}
    assert response_format("forward", "text") is None
    with pytest.raises(ValueError, match="reply kind"):
        reply_schema("other")


@pytest.mark.parametrize(("text", "lang"), [("So x = 3.", "latin"), ("因此 x = 3。", "zh"), ("したがって x = 3", "ja"),
                                             ("따라서 x = 3", "ko"), ("Значит x = 3", "cyrillic"), ("= 3", None)])
def test_language_of(text, lang):
    assert language_of(text) == lang


def test_language_share_counts_steps_against_their_question():
    paths = [{"question": "长方形的面积是多少？", "steps": [{"thought": "面积等于长乘以宽。", "summary": "面积 = 40"},
                                                    {"thought": "So the area is 40.", "summary": "Area 40."}]},
             {"question": "What is 2 + 2?", "steps": [{"thought": "2 + 2 = 4.", "summary": "It is four."}]}]
    share = language_share(paths)
    assert share["steps_in_question_language"] == round(2 / 3, 4)
    assert share["by_question_language"] == {"latin": {"paths": 1, "steps": 1, "in_question_language": 1.0},
                                             "zh": {"paths": 1, "steps": 2, "in_question_language": 0.5}}
