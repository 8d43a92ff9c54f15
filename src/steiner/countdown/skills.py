"""The skills a Countdown search rests on, measured teacher-forced on reference searches.

For each problem the reference search (`search_path`: moves in a fixed order, every dead end entered,
every result written out) is rendered as the model's chat turn; the model reads it and predicts each
token from the ones before it. The tokens are sorted by the skill they test:

- ``arithmetic``: a result after "=" ("8*4=32", "32+7=39");
- ``state``: the numbers left, in the thought ("32,7:") and the summary ("remaining: 32,7");
- ``target_check``: the target copied into a check ("(39?");
- ``target_reflection``: the target written after words ("No result is 39.", "reaches 39.");
- ``verdict``: the "yes" / "no" of a check;
- ``move``: a step's name, the move the search tries next ("* 1,2 in 4,8,7: 8*4",
  "Back to step 0: + 3,1 in 4,8,7: 7+4"): the order of the search, learned or not;
- ``answer``: the expression a hit's reflection writes ("reaches 39: (8 * 4) + 7.") and the answer
  after the reasoning, which copies it.

Each skill's figure is the share of its tokens the model's most likely token gets right. Free
generation compounds a miss -- the next check copies the wrong target from the last one -- so these
bound the pass rate from above, and a skill that is right on training targets and wrong on held-out
ones is memorised, not learned. (That is how the demo's first SFT models failed: 97% of held-out
targets copied right into checks, 0 of 205 into reflections, where they wrote "No result is 24." for
a 36; the drill text now writes that reflection on every target value.)
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from steiner.countdown.steps import search_path
from steiner.format import ReasoningPath, render, step_to_dict

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SKILLS = ("arithmetic", "state", "target_check", "target_reflection", "verdict", "move", "answer")

_FIELD = r"<\|reasoning_step_{0}_start\|>(.*?)<\|reasoning_step_{0}_end\|>"
_PATTERNS: dict[str, tuple[str, str]] = {  # skill: (step field, pattern whose groups are the tested spans)
    "arithmetic": ("thought", r"\d[-+*/]\d+=(\d+)"),
    "state": ("thought", r"\. (\d+),(\d+):"),
    "target_check": ("thought", r"\((\d+)\?"),
    "verdict": ("thought", r"\? (yes|no)\)"),
    "target_reflection": ("reflection", r"(?:No result is|reaches|is not) (\d+)[.:]"),
    "move": ("name", r"^(?:Back to step \d+: )?(.+)$"),
    "answer": ("reflection", r"reaches \d+: (?:\d+ is \S+, so )?(.+)\.$"),
}
_FINAL_ANSWER = r"<\|reasoning_end\|>(.+?)(?:<\||$)"
_SUMMARY_STATE = r"remaining: (\d+)(?:,(\d+))?(?:,(\d+))?(?:,(\d+))?"


def skill_spans(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, skill)`` character spans of the tested values in a rendered search ``text``."""
    spans: list[tuple[int, int, str]] = []

    def add(field: str, pattern: str, skill: str) -> None:
        for f in re.finditer(_FIELD.format(field), text, re.S):
            for m in re.finditer(pattern, f.group(1)):
                for g in range(1, (m.lastindex or 0) + 1):
                    if m.group(g) is not None:
                        spans.append((f.start(1) + m.start(g), f.start(1) + m.end(g), skill))

    for skill, (field, pattern) in _PATTERNS.items():
        add(field, pattern, skill)
    add("summary", _SUMMARY_STATE, "state")
    for m in re.finditer(_FINAL_ANSWER, text, re.S):
        spans.append((m.start(1), m.end(1), "answer"))
    return sorted(spans)


def search_text(tokenizer: PreTrainedTokenizerBase, problem: dict[str, Any]) -> str:
    """The chat text of ``problem``'s reference search (user question, assistant steps and answer)."""
    steps, answer = search_path(problem["numbers"], problem["target"])
    messages = [{"role": "user", "content": problem["question"]},
                {"role": "assistant", "content": answer, "steps": [step_to_dict(s) for s in steps]}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    if render(ReasoningPath(steps, answer)) not in text:
        raise ValueError("the chat template does not render the assistant's steps (is this a steiner model?)")
    return text


def measure_skills(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, problems: list[dict[str, Any]],
                   ) -> dict[str, Any]:
    """Teacher-forced accuracy per skill (`SKILLS`) over the reference searches of ``problems``
    (records with ``question``, ``numbers``, ``target``), with the token count of each."""
    import torch

    right = dict.fromkeys(SKILLS, 0)
    total = dict.fromkeys(SKILLS, 0)
    model.eval()
    for problem in problems:
        text = search_text(tokenizer, problem)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        with torch.no_grad():
            pred = model(torch.tensor([ids])).logits[0].argmax(-1).tolist()
        spans = skill_spans(text)
        for i in range(1, len(ids)):
            s, e = offsets[i]
            for a, b, skill in spans:
                if s < b and a < e:  # the token overlaps a tested value
                    total[skill] += 1
                    right[skill] += pred[i - 1] == ids[i]
                    break
    out: dict[str, Any] = {k: (right[k] / total[k] if total[k] else None) for k in SKILLS}
    out["tokens"] = total
    out["problems"] = len(problems)
    return out
