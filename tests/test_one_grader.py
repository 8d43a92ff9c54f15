"""One grader: the same completion gets the same verdict in evaluation, the RL outcome reward and
synthesis answer checks (issue 15: RL used to lower-case only, and passed Countdown answers raw)."""

from __future__ import annotations

import pytest

from steiner.eval.tasks import EvalItem, TaskSpec
from steiner.format import ReasoningPath, Step, parse, render
from steiner.grading import grade
from steiner.synth.sample import domain_hooks
from steiner.train.rewards import StepRewardConfig, completion_reward, make_checker

STEP = Step(name="Think", thought="t", summary="s", reflection="r", decision="end")
CD = {"id": "cd", "question": "Using the numbers 4, 8, 7, make 39.", "answer": "8 * 4 + 7",
      "numbers": [4, 8, 7], "target": 39}
TEXT = {"id": "fr", "question": "What is the capital of France?", "answer": "Paris"}


def verdicts(record: dict, task: TaskSpec, item: EvalItem, answer: str) -> tuple[bool, bool, bool, bool]:
    """(eval, RL outcome reward, RL checker, synthesis answer check) on one completion ending in ``answer``."""
    completion = render(ReasoningPath([STEP], answer))
    path = parse(completion)
    rl = completion_reward(record, None, path, StepRewardConfig())
    return (grade(task, item, completion).correct, rl.correct, make_checker(record)(path.answer),
            domain_hooks(record).answer_ok(path.answer))


@pytest.mark.parametrize("answer,expected", [
    ("The Paris.", True), ("paris", True), ("the  PARIS!", True), ("Lyon", False), ("Paris, Texas", False)])
def test_text_answers_agree(answer, expected):
    item = EvalItem(TEXT["id"], TEXT["question"], TEXT["answer"])
    assert verdicts(TEXT, TaskSpec("capitals", "text"), item, answer) == (expected,) * 4


@pytest.mark.parametrize("answer,expected", [
    ("\\boxed{(8 x 4) + 7}", True), ("8 × 4 + 7 = 39", True), ("So: 7 + 32 ÷ 1 ... no.\n(8 × 4) + 7", True),
    ("\\boxed{8 \\times 4 + 7}", True), ("(8 ÷ 4) + 7", False), ("8 * 4 * 7", False), ("39", False)])
def test_countdown_answers_agree(answer, expected):
    item = EvalItem(CD["id"], CD["question"], CD["answer"], numbers=CD["numbers"], target=CD["target"])
    assert verdicts(CD, TaskSpec("countdown", "countdown"), item, answer) == (expected,) * 4


def test_unfinished_reasoning_has_no_answer_anywhere():
    completion = render(ReasoningPath([Step("n", "t", "s", "r", "proceed")]))
    item = EvalItem(TEXT["id"], TEXT["question"], TEXT["answer"])
    assert not grade(TaskSpec("capitals", "text"), item, completion + "Paris").correct
    assert not completion_reward(TEXT, None, parse(completion + "Paris"), StepRewardConfig()).correct


MATH = {"id": "m", "question": "Compute ((10 * 3) - 19) * 2.", "answer": "22"}
SCI = {"id": "e", "question": "Speed of the wave in m/s?", "answer": "3.3 \\times 10^{3}"}


@pytest.mark.parametrize("record,answer,expected", [
    (MATH, "((10 * 3) - 19) * 2", True), (MATH, "22", True), (MATH, "The answer is 22", True),
    (MATH, "$22$", True), (MATH, "((10 * 3) - 19) * 3", False),
    # read as its last number, "... * 2" used to equal a gold 2
    ({**MATH, "answer": "2"}, "((10 * 3) - 19) * 2", False),
    (SCI, "3.3 \\times 10^{3}", True), (SCI, "2.3 \\times 10^{3}", False), (SCI, "3300", True),
    ({**MATH, "answer": "\\frac{5}{6}"}, "\\dfrac{10}{12}", True)])
def test_bare_math_answers_are_read_whole_and_agree(record, answer, expected):
    item = EvalItem(record["id"], record["question"], record["answer"])
    assert verdicts(record, TaskSpec("math", "math"), item, answer) == (expected,) * 4
