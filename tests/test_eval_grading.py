"""The one grading module: answer extraction and `grade` for every answer type."""

from __future__ import annotations

import pytest

from steiner.eval.tasks import EvalItem, TaskSpec
from steiner.format import ReasoningPath, Step, render
from steiner.grading import answer_text, extract_choice, extract_expression, extract_number, grade


def completion(answer: str) -> str:
    """A well-formed one-step Steiner completion ending in ``answer``."""
    return render(ReasoningPath([Step("Look", "think about A and B", "thought", "fine", "end")], answer))


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("C", "C"), ("(C)", "C"), ("C.", "C"), ("C) Nitrogen", "C"), ("Answer: C", "C"), ("answer: (C)", "C"),
        ("The answer is C.", "C"), ("the answer is (C)", "C"), ("**C**", "C"), ("\\boxed{C}", "C"),
        ("I think it's B, so the answer is D", "D"), ("Option D is right", "D"), ("Choice: (B)", "B"),
        ("The correct one is (B) because (A) fails... final (C)", "C"), ("I pick B", "B"),
    ],
)
def test_extract_choice(text: str, letter: str) -> None:
    assert extract_choice(text, 4) == letter


@pytest.mark.parametrize("text", ["", "no idea", "B or C", "Answer: E", "Maybe (F)"])
def test_extract_choice_none_or_out_of_range(text: str) -> None:
    assert extract_choice(text, 4) is None


def test_extract_choice_range_follows_choices() -> None:
    assert extract_choice("Answer: J", 10) == "J"
    assert extract_choice("Answer: J", 4) is None


@pytest.mark.parametrize(
    ("text", "num"),
    [("42", "42"), ("The answer is 1,000.", "1000"), ("x = 3.50", "3.5"), ("\\boxed{-7} and later 8", "-7"),
     ("first 3 then 4", "4"), ("answer: 3/4, checked with 12", "3/4"), ("about 2.0", "2")],
)
def test_extract_number(text: str, num: str) -> None:
    assert extract_number(text) == num


@pytest.mark.parametrize(
    ("text", "expr"),
    [("(11 - 7) * (3 + 3) = 24", "(11 - 7) * (3 + 3)"), ("So 3 × 8 = 24", "3 * 8"),
     ("Try this:\n100 - 4*2\nthat works", "100 - 4*2"), ("\\boxed{16 + (14 - 8)}", "16 + (14 - 8)")],
)
def test_extract_expression(text: str, expr: str) -> None:
    assert extract_expression(text) == expr


def test_answer_text_after_reasoning() -> None:
    assert answer_text(completion("Answer: B")) == "Answer: B"
    assert answer_text("plain text, no reasoning tokens") == "plain text, no reasoning tokens"
    truncated = completion("B")[:60]
    assert answer_text(truncated) is None  # reasoning started and never ended


def item(answer: str, choices: list[str] | None = None, **kw) -> EvalItem:
    return EvalItem(id="q", prompt="?", answer=answer, choices=choices, **kw)


def test_grade_choice() -> None:
    spec = TaskSpec("t", "choice", choices_column="choices")
    it = item("B", ["x", "y", "z", "w"])
    g = grade(spec, it, completion("The answer is (B)."))
    assert g.correct and g.extracted == "B"
    g = grade(spec, it, completion("A"))
    assert not g.correct and g.extracted == "A" and "gold B" in g.reason
    # the letter inside the reasoning does not count; only the text after reasoning ends
    g = grade(spec, it, completion("I am not sure"))
    assert not g.correct and g.extracted is None
    g = grade(spec, it, completion("B")[:50])
    assert not g.correct and "did not end" in g.reason


def test_grade_number_and_math() -> None:
    num = TaskSpec("n", "number")
    assert grade(num, item("1000"), completion("It is 1,000.")).correct
    assert grade(num, item("0.5"), completion("1/2")).correct
    assert not grade(num, item("7"), completion("8")).correct
    math = TaskSpec("m", "math")
    g = grade(math, item("\\frac{1}{2}"), completion("So the result is $0.5$."))
    assert g.correct and g.extracted is not None
    assert grade(math, item("x^2 + 1"), completion("The answer is $1 + x^2$")).correct
    assert not grade(math, item("x^2 + 1"), completion("The answer is $x^2 - 1$")).correct


def test_grade_countdown_uses_the_checker() -> None:
    spec = TaskSpec("c", "countdown")
    it = item("16 + (14 - 8)", numbers=[8, 16, 14], target=22)
    g = grade(spec, it, completion("(14 - 8) + 16 = 22"))  # a different correct expression also counts
    assert g.correct and g.extracted == "(14-8)+16"
    g = grade(spec, it, completion("16 + 14 - 8 - 8 = 14"))
    assert not g.correct and g.reason != "correct"
    g = grade(spec, it, completion("no idea"))
    assert not g.correct and g.extracted is None


def test_grade_text() -> None:
    spec = TaskSpec("t", "text")
    assert grade(spec, item("The Eiffel Tower"), completion("eiffel tower.")).correct
    assert not grade(spec, item("Paris"), completion("London")).correct


def test_countdown_teacher_paths_grade_correct() -> None:
    """Reference completions written by the built-in Countdown step writer grade as correct; swapped answers do not."""
    import random

    from steiner.countdown import expression, generate_problems, ops_steps, shortest_solution
    from steiner.eval.tasks import get_task, rows_to_items

    problems = generate_problems(20, seed=5)
    items = rows_to_items(get_task("countdown"), problems, "generated")
    spec = get_task("countdown")
    rng = random.Random(0)
    texts = []
    for it in items:
        ops = shortest_solution(it.numbers, it.target)
        text = render(ReasoningPath(ops_steps(it.numbers, ops, it.target, rng), expression(it.numbers, ops)))
        texts.append(text)
        assert grade(spec, it, text).correct, text
    wrong = [grade(spec, it, texts[(i + 1) % len(items)]) for i, it in enumerate(items)]
    assert sum(g.correct for g in wrong) <= 2  # another problem's answer almost never fits
