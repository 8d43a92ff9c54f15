"""Steiner's step-bounding logits processor: force the reasoning to take between min and max steps.

The rules, over the completion's own tokens (the prompt is never looked at):

- no completion token yet: only ``<|reasoning_start|>``;
- last token ``<|reasoning_step_end|>`` and n step ends so far: n >= max_steps -> only
  ``<|reasoning_end|>``; n < min_steps -> only proceed/backtrack; otherwise proceed, backtrack and
  end, and the model's own logits choose;
- last token proceed or backtrack: only ``<|reasoning_step_start|>``;
- anything else: untouched.

Cost. Only the last token of each row is read on every call (one table lookup); the step count is recomputed from
the ids, and only for rows whose last token is a step end (once per step). So the common call is
O(rows) plus the O(rows x vocab) copy every processor pays, whatever the length of the reasoning,
and the count stays exact when beam search reorders rows between calls (no per-row state to go
stale). See benchmarks/logits_processor.py for the figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from transformers import LogitsProcessor

from steiner.infer.vocab import InferVocab, check_step_bounds

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# what a row may emit next; FREE leaves the row untouched
FREE, ONLY_START, ONLY_END, CONTINUE, DECIDE, ONLY_STEP_START = range(6)


def rule_tokens(vocab: InferVocab) -> dict[int, list[int]]:
    """The allowed token ids of each constrained rule."""
    t = vocab.ids
    return {
        ONLY_START: [t.reasoning_start],
        ONLY_END: [t.reasoning_end],
        CONTINUE: [t.proceed, t.backtrack],
        DECIDE: [t.proceed, t.backtrack, t.reasoning_end],
        ONLY_STEP_START: [t.step_start],
    }


def decision_rule(n: int, min_steps: int, max_steps: int | None) -> int:
    """The rule after the n-th step end (scalar form, used by the vLLM adapters)."""
    if max_steps is not None and n >= max_steps:
        return ONLY_END
    if n < min_steps:
        return CONTINUE
    return DECIDE


def rule_for_sequence(vocab: InferVocab, completion: Sequence[int], min_steps: int, max_steps: int | None,
                      step_ends: int | None = None) -> int:
    """The rule for one completion given as a list of ids (``step_ends`` skips the recount)."""
    if not completion:
        return ONLY_START
    last = completion[-1]
    t = vocab.ids
    if last == t.step_end:
        n = completion.count(t.step_end) if step_ends is None else step_ends
        return decision_rule(n, min_steps, max_steps)
    if last == t.proceed or last == t.backtrack:
        return ONLY_STEP_START
    return FREE


class RuleTable:
    """The allowed tokens of each rule, laid out for cheap masking, built once per width and device.

    Masking is memory-bound at a 150k vocabulary, so the layout aims at the fewest passes over the
    scores: rules with few allowed ids keep them as an index tensor (only their rows are refilled),
    and a (rules x vocab) "banned" table serves batches where some row may write text.
    """

    SPARSE_MAX = 64

    def __init__(self, allowed: dict[int, list[int]], num_rules: int) -> None:
        self.allowed = allowed
        self.num_rules = num_rules
        self.sparse_rules = {r for r, ids in allowed.items() if len(ids) <= self.SPARSE_MAX}
        self._ids: dict[tuple[int, int, torch.device], torch.Tensor] = {}
        self._banned: dict[tuple[int, torch.device], torch.Tensor] = {}

    def ids(self, rule: int, vocab_width: int, device: torch.device) -> torch.Tensor:
        """The allowed ids of a sparse rule."""
        key = (rule, vocab_width, device)
        if key not in self._ids:
            ids = [i for i in self.allowed[rule] if i < vocab_width]
            self._ids[key] = torch.tensor(ids, dtype=torch.long, device=device)
        return self._ids[key]

    def banned(self, vocab_width: int, device: torch.device) -> torch.Tensor:
        """(rules, vocab) bool: True where a rule forbids the token (the FREE row forbids nothing)."""
        key = (vocab_width, device)
        if key not in self._banned:
            table = torch.zeros(self.num_rules, vocab_width, dtype=torch.bool)
            for rule, ids in self.allowed.items():
                table[rule] = True
                table[rule, [i for i in ids if i < vocab_width]] = False
            self._banned[key] = table.to(device)
        return self._banned[key]


def apply_rules(scores: torch.Tensor, rules: torch.Tensor, table: RuleTable) -> torch.Tensor:
    """A new tensor: rows with a rule other than FREE keep only their allowed tokens' scores."""
    present = [r for r in torch.unique(rules).tolist() if r != FREE]
    if not present:
        return scores.clone()
    width = scores.shape[-1]
    if any(r not in table.sparse_rules for r in present):  # some row may write text: one masked pass
        return scores.masked_fill(table.banned(width, scores.device)[rules], float("-inf"))
    out = scores.clone()
    for r in present:  # only forced/choice rows: refill them and put the allowed scores back
        rows = torch.nonzero(rules == r).flatten()
        data = table.ids(r, width, scores.device)
        keep = scores[rows[:, None], data[None, :]]
        out[rows] = float("-inf")
        out[rows[:, None], data[None, :]] = keep
    return out


class CompletionStart:
    """Where each row's completion starts in ``input_ids``.

    With ``prompt_lengths`` (an int, or one int per row or per prompt when rows are
    prompts x num_return_sequences or x num_beams) the start is given. Otherwise it is the input
    length at the first call of a generation: with left padding every prompt ends at that column.
    A new generation is detected when a call's length is not the previous length + 1 or the
    number of rows changed; `reset()` forces it.
    """

    def __init__(self, prompt_lengths: int | Sequence[int] | None) -> None:
        if prompt_lengths is not None:
            values = [prompt_lengths] if isinstance(prompt_lengths, int) else list(prompt_lengths)
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
                raise ValueError(f"prompt_lengths must be a non-negative int or a list of them, got {prompt_lengths!r}")
            self._given: torch.Tensor | None = torch.tensor(values, dtype=torch.long)
        else:
            self._given = None
        self.reset()

    def reset(self) -> None:
        self._start: int | None = None
        self._last_len: int | None = None
        self._rows: int | None = None
        self._cache: tuple[tuple, tuple[torch.Tensor, int, int]] | None = None

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Per-row start column (a long tensor on the ids' device)."""
        return self.span(input_ids)[0]

    def span(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """(per-row start columns, their min, their max); cached while the batch shape stays."""
        rows, length = input_ids.shape
        if self._given is None:
            if self._last_len is None or length != self._last_len + 1 or rows != self._rows:
                self._start = length
            self._last_len, self._rows = length, rows
        key = (rows, input_ids.device, self._start)
        if self._cache is None or self._cache[0] != key:
            if self._given is not None:
                given = self._given
                if given.numel() == 1:
                    given = given.expand(rows)
                elif rows % given.numel() == 0:
                    given = given.repeat_interleave(rows // given.numel())
                else:
                    raise ValueError(f"prompt_lengths has {given.numel()} entries but the batch has {rows} rows")
                starts = given.to(input_ids.device)
            else:
                starts = torch.full((rows,), self._start, dtype=torch.long, device=input_ids.device)
            self._cache = (key, (starts, int(starts.min()), int(starts.max())))
        return self._cache[1]


def lut_size(vocab: InferVocab) -> int:
    """Length of a lookup table over token ids: the tokenizer's and any padding rows of the output layer
    (models round their vocabulary up; 2**18 covers every common one)."""
    return max(vocab.size + 1, 1 << 18)


def count_in_completion(input_ids: torch.Tensor, rows: torch.Tensor, starts: torch.Tensor, token: int) -> torch.Tensor:
    """How often ``token`` occurs in the completions of ``rows`` (vectorised over those rows)."""
    lo = int(starts[rows].min())
    ids = input_ids[rows, lo:]
    cols = torch.arange(lo, input_ids.shape[1], device=input_ids.device)
    return ((ids == token) & (cols[None, :] >= starts[rows, None])).sum(1)


class StepBoundsLogitsProcessor(LogitsProcessor):
    """Bound the number of reasoning steps (Steiner's inference-time scaling knob).

    Args:
        tokenizer: a tokenizer extended with the reasoning tokens (ids are resolved from it).
        min_steps: the reasoning may not end before this many steps.
        max_steps: after this many steps the reasoning must end (None: no upper bound).
        prompt_lengths: where the completion starts in ``input_ids`` (see `CompletionStart`); by
            default the input length at the first call of each generation, which is right for
            ``model.generate`` with left padding. Call `reset()` to start a new generation by hand.

    ``__call__(input_ids (rows, length) long, scores (rows, vocab) float) -> scores (rows, vocab)``
    returns a new tensor; disallowed tokens get ``-inf``.

    Example::

        proc = StepBoundsLogitsProcessor(tok, min_steps=2, max_steps=6)
        model.generate(**batch, logits_processor=LogitsProcessorList([proc]), do_sample=True)
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        min_steps: int = 0,
        max_steps: int | None = None,
        prompt_lengths: int | Sequence[int] | None = None,
    ) -> None:
        check_step_bounds(min_steps, max_steps)
        self.vocab = InferVocab.from_tokenizer(tokenizer)
        self.min_steps = min_steps
        self.max_steps = max_steps
        self.start = CompletionStart(prompt_lengths)
        self.table = RuleTable(rule_tokens(self.vocab), 6)
        self._luts: dict[torch.device, torch.Tensor] = {}

    def reset(self) -> None:
        """Forget the completion start: the next call begins a new generation."""
        self.start.reset()

    def _lut(self, device: torch.device) -> torch.Tensor:
        """The rule implied by each last token (DECIDE at a step end, before the count is checked)."""
        if device not in self._luts:
            t = self.vocab.ids
            lut = torch.full((lut_size(self.vocab),), FREE, dtype=torch.long)
            lut[[t.proceed, t.backtrack]] = ONLY_STEP_START
            lut[t.step_end] = DECIDE
            self._luts[device] = lut.to(device)
        return self._luts[device]

    def rules(self, input_ids: torch.Tensor, span: tuple[torch.Tensor, int, int] | None = None) -> torch.Tensor:
        """The rule of each row (FREE, ONLY_START, ...) as a long tensor (``span``: this call's
        `CompletionStart.span`, when already taken)."""
        t = self.vocab.ids
        starts, _, latest = span if span is not None else self.start.span(input_ids)
        length = input_ids.shape[1]
        rules = self._lut(input_ids.device)[input_ids[:, -1]]
        if self.min_steps or self.max_steps is not None:  # bounds: count the steps of rows at a step end
            at_end = torch.nonzero(rules == DECIDE).flatten()
            if at_end.numel():
                n = count_in_completion(input_ids, at_end, starts, t.step_end)
                r = torch.full_like(n, DECIDE)
                r[n < self.min_steps] = CONTINUE
                if self.max_steps is not None:
                    r[n >= self.max_steps] = ONLY_END
                rules[at_end] = r
        if length <= latest:  # some completion is still empty
            rules[length - starts <= 0] = ONLY_START
        return rules

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        span = self.start.span(input_ids)  # once per call: it also detects a new generation
        if input_ids.shape[1] > span[2]:  # every completion has begun: the last tokens may leave all rows free
            last_rule = self._lut(input_ids.device)[input_ids[:, -1]]
            if not bool(last_rule.any()):  # FREE is 0: the common case, one lookup and one copy
                return scores.clone()
        return apply_rules(scores, self.rules(input_ids, span), self.table)
