"""Countdown, the embedded demo domain: problems, an exact solver, an answer checker, the step writer
and the built-in teacher. Reach a target from given numbers with + - * /, each number at most once.

Importing this package registers `CountdownDomain` with the domain seam (`steiner.domain`)."""

from steiner.countdown.checker import CheckResult, check_answer
from steiner.countdown.domain import CountdownDomain
from steiner.countdown.problems import generate_problems, held_out_targets, parse_question, question_text
from steiner.countdown.solver import (
    OPS,
    Op,
    State,
    apply_op,
    expression,
    moves,
    reachable,
    shortest_solution,
    solvable,
    solve,
    state_key,
    state_of,
)
from steiner.countdown.steps import (
    answer_from_steps,
    dead_end_reflection,
    op_step,
    ops_steps,
    parse_op,
    parse_state,
    step_key,
    steps_ops,
)
from steiner.domain import register

COUNTDOWN = register(CountdownDomain())

__all__ = [
    "COUNTDOWN", "OPS", "CheckResult", "CountdownDomain", "Op", "State", "answer_from_steps", "apply_op",
    "check_answer", "dead_end_reflection", "expression", "generate_problems", "moves", "op_step", "ops_steps",
    "parse_op", "parse_question", "parse_state", "question_text", "reachable", "shortest_solution",
    "solvable", "solve", "state_key", "state_of", "step_key", "steps_ops", "held_out_targets",
]
