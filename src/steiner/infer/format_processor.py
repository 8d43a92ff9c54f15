"""A logits processor for the whole reasoning format: every completion it lets through parses cleanly.

The grammar it enforces, token by token (text = any vocabulary entry that is not control markup)::

    <|reasoning_start|>
      ( <|reasoning_step_start|>
          name_start text+ name_end  thought_start text+ thought_end
          summary_start text+ summary_end  reflection_start text+ reflection_end
        <|reasoning_step_end|>  (proceed | backtrack | end) )+
    answer-text* eos

Inside a field the model writes text or the field's end token, nothing else; after a decision only
a new step may start; after ``<|reasoning_end|>`` only text and eos. Step bounds follow
`StepBoundsLogitsProcessor` (``min_steps``, ``max_steps``): below ``min_steps`` ending is removed and
the model's own odds choose between proceed and backtrack. (Moving the end's probability to proceed,
as s1's budget forcing turns an end of thinking into "Wait", was measured and dropped: after a step
that reached the answer, proceed is out of distribution and backtrack is the search's way on; see
docs/demo.md, session 27.) ``max_reasoning_tokens`` caps the reasoning
(s1-style budget forcing): when the tokens left are just enough to close the open step (empty
remaining fields, step end) and end the reasoning, those closing tokens are forced in order, so the
reasoning (``<|reasoning_start|>`` to ``<|reasoning_end|>`` inclusive) never exceeds the budget when
the budget is at least 12 tokens; the budget wins over ``min_steps``.

State. The grammar state of a row is a function of the last structural token in its completion and
whether text follows it, so it is recomputed from the ids each call: exact under beam search's row
reordering, and cheap because only a window of the last 128 tokens is searched (rows whose open
field is longer fall back to their whole completion). The step count is recomputed only at step
ends, as in `StepBoundsLogitsProcessor`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from transformers import LogitsProcessor

from steiner.infer.step_bounds import CompletionStart, RuleTable, count_in_completion, lut_size
from steiner.infer.vocab import InferVocab, check_step_bounds

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# states (also the rule index of the allowed-token table)
FREE, START, OPEN_FIRST, OPEN, STEP = range(5)
FIELD_EMPTY = 5  # + field index 0..3 (name, thought, summary, reflection): just opened
FIELD_TEXT = 9  # + field index: has text
AFTER_FIELD = 13  # + field index: closed, expecting the next field or the step end
DECIDE, CONTINUE, END_ONLY, ANSWER = 17, 18, 19, 20
FORCE = 21  # + index of the token in ReasoningTokenIds.all() (14: eos): that token only
FORCE_EOS = FORCE + 14
NUM_RULES = FORCE + 15

WINDOW = 128  # search window when some length is uncapped (longer spans fall back to the whole completion)
EOS_KIND = 15  # kinds: 0 text, 1..14 reasoning tokens in SPECIAL_TOKENS order, 15 eos
# default caps on the text tokens of name, thought, summary, reflection, and of the answer
FIELD_CAPS = (48, 512, 128, 128)
ANSWER_CAP = 512
ANSWER_RESERVE = 16  # completion tokens kept for the answer (eos included) under a max_new_tokens budget

# tokens still needed to close the reasoning from each state (budget forcing)
_NEED = {START: 2, OPEN_FIRST: 1, OPEN: 11, STEP: 10, DECIDE: 1}
for _f in range(4):
    _NEED[FIELD_EMPTY + _f] = _NEED[FIELD_TEXT + _f] = 2 * (3 - _f) + 3
    _NEED[AFTER_FIELD + _f] = 2 * (3 - _f) + 2


class FormatLogitsProcessor(LogitsProcessor):
    """Keep every step well-formed at any temperature, with optional step bounds and a token budget.

    Args:
        tokenizer: a tokenizer extended with the reasoning tokens; its eos ends the answer.
        min_steps: the reasoning may not end before this many steps (proceed or backtrack, the model's odds).
        max_steps: after this many steps the reasoning must end (None: no bound).
        max_reasoning_tokens: budget for the reasoning, ``<|reasoning_end|>`` included (None: none).
        prompt_lengths: where each row's completion starts (see `steiner.infer.step_bounds.CompletionStart`).
        allow_empty_fields: let a field close right after it opens (default: at least one text token).
        max_new_tokens: the completion's budget, eos included (``max_tokens``): the reasoning is closed
            early enough to leave ``answer_reserve`` tokens, and eos is forced on the last one, so a
            completion of a budget of at least 32 tokens always ends with eos and parses cleanly.
        field_caps: most text tokens in name, thought, summary, reflection (None: uncapped); a field
            at its cap is closed.
        max_answer_tokens: most answer tokens before eos is forced (None: uncapped).
        answer_reserve: tokens kept for the answer (eos included) under ``max_new_tokens``.

    ``__call__(input_ids (rows, length), scores (rows, vocab)) -> new scores``, disallowed = ``-inf``.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        min_steps: int = 0,
        max_steps: int | None = None,
        max_reasoning_tokens: int | None = None,
        prompt_lengths: int | Sequence[int] | None = None,
        *,
        allow_empty_fields: bool = False,
        max_new_tokens: int | None = None,
        field_caps: Sequence[int] | None = FIELD_CAPS,
        max_answer_tokens: int | None = ANSWER_CAP,
        answer_reserve: int = ANSWER_RESERVE,
    ) -> None:
        check_step_bounds(min_steps, max_steps)
        for name, value in (("max_reasoning_tokens", max_reasoning_tokens), ("max_new_tokens", max_new_tokens),
                            ("max_answer_tokens", max_answer_tokens), ("answer_reserve", answer_reserve)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if field_caps is not None and (len(field_caps) != 4 or any(
                isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in field_caps)):
            raise ValueError(f"field_caps must be 4 positive integers (name, thought, summary, reflection), "
                             f"got {field_caps!r}")
        self.vocab = InferVocab.from_tokenizer(tokenizer)
        self.min_steps = min_steps
        self.max_steps = max_steps
        self.max_reasoning_tokens = max_reasoning_tokens
        self.allow_empty_fields = allow_empty_fields
        self.max_new_tokens = max_new_tokens
        self.field_caps = tuple(field_caps) if field_caps is not None else None
        self.max_answer_tokens = max_answer_tokens
        self.answer_reserve = answer_reserve
        # the budget of the reasoning: its own, and the completion's less the answer's share
        budgets = [b for b in (max_reasoning_tokens, max_new_tokens and max_new_tokens - answer_reserve) if b]
        self.reasoning_budget = max(1, min(budgets)) if budgets else None
        capped = self.field_caps is not None and max_answer_tokens is not None
        # every open span is shorter than the window, so the search never falls back to the whole completion
        self.window = max(*self.field_caps, max_answer_tokens) + 2 if capped else WINDOW
        self.start = CompletionStart(prompt_lengths)
        self._prev: tuple[torch.Tensor, ...] | None = None  # the last call's ids, starts and scan
        self._build_tables()

    def reset(self) -> None:
        """Forget the completion start: the next call begins a new generation."""
        self.start.reset()
        self._prev = None

    def _build_tables(self) -> None:
        v, t = self.vocab, self.vocab.ids
        reasoning = t.all()
        text = [i for i in range(v.size) if i not in v.control_ids]
        starts = [t.name_start, t.thought_start, t.summary_start, t.reflection_start]
        ends = [t.name_end, t.thought_end, t.summary_end, t.reflection_end]
        allowed: dict[int, list[int]] = {
            START: [t.reasoning_start],
            OPEN_FIRST: [t.step_start],
            OPEN: [t.step_start],
            STEP: [t.name_start],
            DECIDE: [t.proceed, t.backtrack, t.reasoning_end],
            CONTINUE: [t.proceed, t.backtrack],
            END_ONLY: [t.reasoning_end],
            ANSWER: text + [v.eos_id],
        }
        forced = {START: t.reasoning_start, OPEN_FIRST: t.reasoning_end, OPEN: t.step_start, STEP: t.name_start,
                  DECIDE: t.reasoning_end}
        for f in range(4):
            allowed[FIELD_EMPTY + f] = text + ([ends[f]] if self.allow_empty_fields else [])
            allowed[FIELD_TEXT + f] = text + [ends[f]]
            nxt = starts[f + 1] if f < 3 else t.step_end
            allowed[AFTER_FIELD + f] = [nxt]
            forced[FIELD_EMPTY + f] = forced[FIELD_TEXT + f] = ends[f]
            forced[AFTER_FIELD + f] = nxt
        for i, tok in enumerate(reasoning):
            allowed[FORCE + i] = [tok]
        allowed[FORCE_EOS] = [v.eos_id]
        forced[ANSWER] = v.eos_id
        self.table = RuleTable(allowed, NUM_RULES)

        # kind of each id, and the state after a structural kind (column: text follows it or not)
        kind = torch.zeros(v.size + 1, dtype=torch.long)
        for i, tok in enumerate(reasoning):
            kind[tok] = i + 1
        kind[v.eos_id] = EOS_KIND
        self._kind_cpu = kind
        state = torch.full((16, 2), START, dtype=torch.long)
        state[1] = OPEN_FIRST
        state[2] = ANSWER
        state[3] = state[4] = OPEN
        state[5] = STEP
        state[6] = DECIDE
        for f in range(4):
            state[7 + 2 * f, 0] = FIELD_EMPTY + f
            state[7 + 2 * f, 1] = FIELD_TEXT + f
            state[8 + 2 * f] = AFTER_FIELD + f
        state[EOS_KIND] = FREE
        self._state_cpu = state
        need = torch.zeros(NUM_RULES, dtype=torch.long)
        force_rule = torch.zeros(NUM_RULES, dtype=torch.long)
        index = {tok: i for i, tok in enumerate(reasoning)}
        index[v.eos_id] = 14
        for s, n in _NEED.items():
            need[s] = n
        for s, tok in forced.items():
            force_rule[s] = FORCE + index[tok]
        # the text cap of each rule (fields with text, the answer); 0: none
        cap = torch.zeros(NUM_RULES, dtype=torch.long)
        if self.field_caps is not None:
            for f in range(4):
                cap[FIELD_TEXT + f] = self.field_caps[f]
        if self.max_answer_tokens is not None:
            cap[ANSWER] = self.max_answer_tokens
        self._need_cpu, self._force_cpu, self._cap_cpu = need, force_rule, cap
        self._dev: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in self._dev:
            kind = torch.zeros(lut_size(self.vocab), dtype=torch.long)
            kind[: self._kind_cpu.numel()] = self._kind_cpu
            # capped rules: a field's (or the answer's) text length at which it is closed; others never
            cap = torch.where(self._cap_cpu > 0, self._cap_cpu, torch.iinfo(torch.long).max)
            self._dev[device] = tuple(x.to(device) for x in (kind, self._state_cpu.flatten(), self._need_cpu,
                                                               self._force_cpu, cap))
        return self._dev[device]

    def _last_structural(self, input_ids: torch.Tensor, starts: torch.Tensor, kind_lut: torch.Tensor,
                         lo: int, mask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(column, kind) of each row's last structural token in its completion at or after ``lo``;
        (start - 1, 0) when there is none. ``mask``: some row's completion starts after ``lo``.

        Column and kind travel as one number (column * 16 + kind), so one max finds both."""
        length = input_ids.shape[1]
        none = (starts - 1) * 16
        if lo >= length:
            return starts - 1, torch.zeros_like(starts)
        kinds = kind_lut[input_ids[:, lo:]]
        cols = torch.arange(lo * 16, length * 16, 16, device=input_ids.device)
        found = kinds > 0
        if mask:
            found &= cols[None, :] >= (starts * 16)[:, None]
        val = torch.where(found, cols + kinds, none[:, None]).max(1).values
        return val >> 4, val & 15

    def _scan(self, input_ids: torch.Tensor, starts: torch.Tensor, kind_lut: torch.Tensor, lo: int,
              latest: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(column, kind) of each row's last structural token: carried over from the previous call when
        this call extends it by one token (checked over the window, so exact under beam search's row
        reordering and the engine's regrouping), else searched for in the window."""
        length = input_ids.shape[1]
        prev = self._prev
        if (prev is not None and prev[0].shape[0] == input_ids.shape[0] and prev[0].shape[1] == length - 1
                and (prev[1] is starts or torch.equal(prev[1], starts))
                and torch.equal(prev[0][:, max(lo - 1, 0) :], input_ids[:, max(lo - 1, 0) : -1])):
            k = kind_lut[input_ids[:, -1]]
            new = k > 0
            pos = torch.where(new, length - 1, prev[2])
            kind = torch.where(new, k, prev[3])
        else:
            pos, kind = self._last_structural(input_ids, starts, kind_lut, lo, mask=lo < latest)
            if self.window == WINDOW:  # uncapped: an open span longer than the window searches the completion
                redo = torch.nonzero((kind == 0) & (starts < lo)).flatten()
                if redo.numel():
                    s2 = starts[redo]
                    lo2 = int(s2.min())
                    p2, k2 = self._last_structural(input_ids[redo], s2, kind_lut, lo2, mask=lo2 < int(s2.max()))
                    pos[redo], kind[redo] = p2, k2
        # only the capped window makes the carried state exact (every open span is inside the window)
        self._prev = (input_ids, starts, pos, kind) if self.window != WINDOW else None
        return pos, kind

    def rules(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The rule (state, or forced token) of each row as a long tensor.

        The common call is about twenty tensor operations whatever the batch or the reasoning length:
        the window search, two table lookups, the caps; step counts only at step ends, the budget
        only once some completion is near it."""
        t = self.vocab.ids
        kind_lut, state_flat, need, force_rule, cap = self._tables(input_ids.device)
        starts, first, latest = self.start.span(input_ids)
        length = input_ids.shape[1]
        lo = max(first, length - self.window)
        pos, kind = self._scan(input_ids, starts, kind_lut, lo, latest)
        text_len = (length - 1) - pos  # text tokens since the last structural one (or the completion start)
        return self.rules_from(kind, text_len, lambda rows: count_in_completion(input_ids, rows, starts, t.step_end),
                               lambda: length - starts, length - first)

    def rules_from(self, kind: torch.Tensor, text_len: torch.Tensor, step_ends: Callable[[torch.Tensor], torch.Tensor],
                   clen: Callable[[], torch.Tensor], longest: int) -> torch.Tensor:
        """The rules from each row's scan: ``kind`` of its last structural token (0: none), ``text_len``
        text tokens since, ``step_ends(rows)`` the step count of some rows, ``clen()`` the completion
        lengths, ``longest`` their max. Shared with the vLLM adapter, which keeps these per request."""
        _, state_flat, need, force_rule, cap = self._tables(kind.device)
        rules = state_flat[kind * 2 + (text_len > 0)]
        at_end = torch.nonzero(rules == DECIDE).flatten() if (self.min_steps or self.max_steps is not None) else None
        if at_end is not None and at_end.numel():
            n = step_ends(at_end)
            r = torch.full_like(n, DECIDE)
            r[n < self.min_steps] = CONTINUE
            if self.max_steps is not None:
                r[n >= self.max_steps] = END_ONLY
            rules[at_end] = r
        if self.max_steps == 0:
            rules[rules == OPEN_FIRST] = force_rule[OPEN_FIRST]
        if self.field_caps is not None or self.max_answer_tokens is not None:
            rules = torch.where(text_len >= cap[rules], force_rule[rules], rules)  # a span at its cap is closed
        if self.max_new_tokens is not None and longest + 1 >= self.max_new_tokens:  # the last token is eos
            rules = torch.where((rules == ANSWER) & (clen() + 1 >= self.max_new_tokens), force_rule[ANSWER], rules)
        if self.reasoning_budget is not None and longest + 12 > self.reasoning_budget:
            budget = self.reasoning_budget
            c = clen()
            # a step costs at least 11 tokens (start, 4 empty fields, end) plus the decision before it
            decide = (rules == DECIDE) | (rules == CONTINUE) | (rules == END_ONLY)
            rules[decide & (c + 12 > budget)] = END_ONLY
            rules[(rules == OPEN_FIRST) & (c + 11 > budget)] = force_rule[OPEN_FIRST]
            closing = (need[rules] > 0) & (rules != DECIDE) & (c + need[rules] >= budget)
            rules = torch.where(closing, force_rule[rules], rules)
        return rules

    def mask(self, scores: torch.Tensor, rules: torch.Tensor) -> torch.Tensor:
        """A new tensor: each row keeps only what its rule allows (the allowed scores unchanged)."""
        return scores.masked_fill(self.table.banned(scores.shape[-1], scores.device)[rules], float("-inf"))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self.mask(scores, self.rules(input_ids))
