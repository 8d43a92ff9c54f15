"""Human-readable reasoning: numbered steps, backtracks visibly marked, then the answer."""

from __future__ import annotations

import textwrap

from steiner.format import ReasoningPath, parse


def _block(label: str, text: str, width: int) -> list[str]:
    text = " ".join(text.split())
    if not text:
        return []
    return textwrap.wrap(f"{label}{text}", width=width, initial_indent="   ", subsequent_indent="     ")


def format_reasoning(path: ReasoningPath | str, *, width: int = 100, show_problems: bool = True) -> str:
    """Plain text for a path (or a completion, parsed first).

    Each step shows as ``Step K: name`` with its thought, summary and reflection indented, then its
    decision: ``→ proceed``, ``↩ back to step J`` (``↩ backtrack`` when the target is unknown) or
    ``■ end``. The answer follows; format problems found by `parse` are listed last.
    """
    if isinstance(path, str):
        path = parse(path)
    lines: list[str] = []
    for k, step in enumerate(path.steps, start=1):
        lines.append(f"Step {k}: {' '.join(step.name.split()) or '(unnamed)'}")
        lines += _block("", step.thought, width)
        lines += _block("Summary: ", step.summary, width)
        lines += _block("Reflection: ", step.reflection, width)
        if step.decision == "backtrack":
            target = "the question" if step.returns_to == 0 else f"step {step.returns_to}"
            lines.append(f"   ↩ back to {target}" if step.returns_to is not None else "   ↩ backtrack")
        elif step.decision == "proceed":
            lines.append("   → proceed")
        elif step.decision == "end":
            lines.append("   ■ end")
        else:
            lines.append("   … (unfinished)")
    if path.answer is not None:
        lines.append(f"Answer: {path.answer.strip()}")
    else:
        lines.append("Answer: (none: the reasoning did not end)")
    if show_problems and path.problems:
        lines.append("Format problems:")
        lines += [f"  ! {p}" for p in path.problems]
    return "\n".join(lines)
