"""The domain seam: what a domain provides (question parsing, the step state key, the step checker, the
answer grader, the built-in teacher) and the registry every stage looks domains up in.
See `steiner.domain.base` for the table of what each stage asks."""

from steiner.domain.base import (
    BUILTIN_DOMAINS,
    TEXT,
    Domain,
    Grade,
    StepCheck,
    domain_for,
    domain_names,
    get_domain,
    read_questions,
    register,
    verify_steps,
)
from steiner.domain.teacher import Question, Revealed, Teacher

__all__ = [
    "BUILTIN_DOMAINS", "TEXT", "Domain", "Grade", "Question", "Revealed", "StepCheck", "Teacher",
    "domain_for", "domain_names", "get_domain", "read_questions", "register", "verify_steps",
]
