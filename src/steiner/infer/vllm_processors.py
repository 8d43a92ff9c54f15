"""steiner's logits processors inside vLLM (vLLM itself stays optional: imported on use only).

Two interfaces:

- v0 (``SamplingParams(logits_processors=[...])``, old vLLM only: 0.32 has no such field):
  `step_bounds_for_vllm` returns a per-request callable ``(completion_token_ids, logits) -> logits``.
- v1 (``LLM(logits_processors=[cls])`` / ``vllm serve --logits-processors``): the batch-level class
  ``SteinerStepBoundsLogitsProcessor`` (built from `StepBoundsBatchProcessor` and vLLM's
  ``LogitsProcessor`` on first access). A request opts in through
  ``SamplingParams(extra_args={"min_steps": 2, "max_steps": 6})`` (``vllm_xargs`` over HTTP);
  requests without them are untouched. Checked inside vLLM 0.32 (CPU): tests/test_infer_vllm_real.py.
- v1 format processor ``SteinerFormatLogitsProcessor`` (`FormatBatchProcessor`): the whole format
  (`steiner.infer.format_processor.FormatLogitsProcessor`), for requests whose ``extra_args`` hold
  ``"format_strict": true`` or a ``max_reasoning_tokens`` budget (with optional ``min_steps`` and
  ``max_steps``); the request's ``max_tokens`` is the completion budget the format finishes within.
  Such requests are the format processor's alone: the step-bounds class leaves them untouched, so the
  two classes can be installed together.

Both v1 processors keep, per request, running counts over the request's own output list (which vLLM
hands over by reference and only appends to), so each step costs O(new tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from steiner.infer.step_bounds import FREE, RuleTable, apply_rules, rule_for_sequence, rule_tokens
from steiner.infer.vocab import InferVocab, check_step_bounds

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

EXTRA_ARGS = ("min_steps", "max_steps")


def step_bounds_for_vllm(
    tokenizer: PreTrainedTokenizerBase, min_steps: int = 0, max_steps: int | None = None
) -> Callable[[Sequence[int], torch.Tensor], torch.Tensor]:
    """A v0 per-request logits processor: ``(token_ids, logits) -> logits``.

    ``token_ids`` are the completion's ids so far and ``logits`` a 1-D vocabulary row; a new
    tensor comes back. The step count is recounted only when the last token is a step end.
    """
    check_step_bounds(min_steps, max_steps)
    vocab = InferVocab.from_tokenizer(tokenizer)
    table = RuleTable(rule_tokens(vocab), 6)

    def process(token_ids: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        rule = rule_for_sequence(vocab, list(token_ids) if not isinstance(token_ids, list) else token_ids,
                                 min_steps, max_steps)
        if rule == FREE:
            return logits.clone()
        rules = torch.tensor([rule], device=logits.device)
        return apply_rules(logits[None, :], rules, table)[0]

    return process


def params_format(sampling_params: Any) -> tuple[int, int | None, int | None, int | None] | None:
    """(min_steps, max_steps, max_reasoning_tokens, max_tokens) when the request asks for the format
    processor (``format_strict`` or ``max_reasoning_tokens`` in ``extra_args``), else None."""
    extra = getattr(sampling_params, "extra_args", None) or {}
    strict, budget = extra.get("format_strict", False), extra.get("max_reasoning_tokens")
    # over HTTP vLLM's vllm_xargs carries only str/int/float values: true arrives as 1
    flags = {True: True, False: False, "true": True, "false": False, "1": True, "0": False}
    if isinstance(strict, float | int | str) and not isinstance(strict, bool) and strict in flags:
        strict = flags[strict]
    if not isinstance(strict, bool):
        raise ValueError(f"format_strict must be true or false, got {strict!r}")
    if not strict and budget is None:
        return None
    lo, hi = extra.get("min_steps", 0), extra.get("max_steps")
    check_step_bounds(lo, hi)
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise ValueError(f"max_reasoning_tokens must be a positive integer, got {budget!r}")
    return lo, hi, budget, getattr(sampling_params, "max_tokens", None)


def params_bounds(sampling_params: Any) -> tuple[int, int | None] | None:
    """(min_steps, max_steps) from ``sampling_params.extra_args``, or None if the request set neither
    or asked for the format processor (which enforces the bounds itself)."""
    extra = getattr(sampling_params, "extra_args", None) or {}
    if not any(k in extra for k in EXTRA_ARGS) or params_format(sampling_params) is not None:
        return None
    lo, hi = extra.get("min_steps", 0), extra.get("max_steps")
    check_step_bounds(lo, hi)
    return lo, hi


def _move_rows(requests: dict[int, Any], moved: Any) -> None:
    """Apply vLLM's row moves to per-row state: (a, b, direction) moves a's state to b, and a SWAP
    also moves b's to a."""
    for a, b, direction in moved:
        ra, rb = requests.pop(a, None), requests.pop(b, None)
        if ra is not None:
            requests[b] = ra
        if rb is not None and getattr(direction, "name", str(direction)).upper().endswith("SWAP"):
            requests[a] = rb


@dataclass
class _Request:
    min_steps: int
    max_steps: int | None
    output: list[int]  # vLLM's running output list (by reference)
    seen: int = 0
    step_ends: int = 0

    def rule(self, vocab: InferVocab) -> int:
        new = self.output[self.seen :]
        if new:
            self.step_ends += new.count(vocab.ids.step_end)
            self.seen = len(self.output)
        return rule_for_sequence(vocab, self.output, self.min_steps, self.max_steps, step_ends=self.step_ends)


class StepBoundsBatchProcessor:
    """vLLM v1 batch-level logits processor logic (``validate_params``, ``update_state``, ``apply``).

    ``tokenizer`` defaults to the one at ``vllm_config.model_config.tokenizer``.
    """

    def __init__(self, vllm_config: Any, device: Any = None, is_pin_memory: bool = False,
                 tokenizer: PreTrainedTokenizerBase | None = None) -> None:
        if tokenizer is None:
            from transformers import AutoTokenizer

            mc = vllm_config.model_config
            tokenizer = AutoTokenizer.from_pretrained(getattr(mc, "tokenizer", None) or mc.model)
        self.vocab = InferVocab.from_tokenizer(tokenizer)
        self.table = RuleTable(rule_tokens(self.vocab), 6)
        self.requests: dict[int, _Request] = {}

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        """Raise ValueError when ``extra_args`` holds unusable step bounds."""
        params_bounds(sampling_params)

    def is_argmax_invariant(self) -> bool:
        return False  # it forces tokens, so it changes greedy decoding too

    def update_state(self, batch_update: Any | None) -> None:
        """Apply vLLM's batch changes in its order: removed, added, moved."""
        if batch_update is None:
            return
        for index in batch_update.removed:
            self.requests.pop(index, None)
        for added in batch_update.added:
            index, params, output = added[0], added[1], added[-1]  # (index, params, [prompt_ids,] output_ids)
            bounds = params_bounds(params)
            if bounds is None:
                self.requests.pop(index, None)
            else:
                self.requests[index] = _Request(bounds[0], bounds[1], output)
        _move_rows(self.requests, batch_update.moved)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Mask each opted-in row by its rule; other rows pass through."""
        if not self.requests:
            return logits
        rows = sorted(i for i in self.requests if i < logits.shape[0])
        rules = torch.full((logits.shape[0],), FREE, dtype=torch.long)
        for i in rows:
            rules[i] = self.requests[i].rule(self.vocab)
        if not bool((rules != FREE).any()):
            return logits
        return apply_rules(logits, rules.to(logits.device), self.table)


@dataclass
class _FormatRequest:
    key: tuple  # the processor settings (min_steps, max_steps, max_reasoning_tokens, max_tokens)
    output: list[int]  # vLLM's running output list (by reference)
    seen: int = 0
    kind: int = 0  # kind of the last structural token (0: none yet)
    text_len: int = 0  # text tokens since it
    step_ends: int = 0

    def advance(self, kind_of: list[int], step_end: int) -> None:
        """Fold the tokens vLLM appended since the last call into the running state."""
        for tok in self.output[self.seen :]:
            k = kind_of[tok] if tok < len(kind_of) else 0
            if k:
                self.kind, self.text_len = k, 0
                self.step_ends += tok == step_end
            else:
                self.text_len += 1
        self.seen = len(self.output)


class FormatBatchProcessor:
    """vLLM v1 batch-level logic of `FormatLogitsProcessor` (``validate_params``, ``update_state``, ``apply``).

    Each opted-in request carries its scan (last structural kind, text since, step ends) forward over
    its new tokens; the rules come from `FormatLogitsProcessor.rules_from`, one vectorised call per
    group of requests with the same settings. ``tokenizer`` defaults to the model's.
    """

    def __init__(self, vllm_config: Any, device: Any = None, is_pin_memory: bool = False,
                 tokenizer: PreTrainedTokenizerBase | None = None) -> None:
        if tokenizer is None:
            from transformers import AutoTokenizer

            mc = vllm_config.model_config
            tokenizer = AutoTokenizer.from_pretrained(getattr(mc, "tokenizer", None) or mc.model)
        from steiner.infer.format_processor import FormatLogitsProcessor

        self.tokenizer = tokenizer
        self.vocab = InferVocab.from_tokenizer(tokenizer)
        self._make = FormatLogitsProcessor
        self._procs: dict[tuple, Any] = {}
        self.requests: dict[int, _FormatRequest] = {}
        probe = self._proc((0, None, None, None))
        self.kind_of = probe._kind_cpu.tolist()

    def _proc(self, key: tuple) -> Any:
        if key not in self._procs:
            lo, hi, budget, max_tokens = key
            self._procs[key] = self._make(self.tokenizer, lo, hi, budget, max_new_tokens=max_tokens)
        return self._procs[key]

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        """Raise ValueError when ``extra_args`` hold unusable format options."""
        params_format(sampling_params)

    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: Any | None) -> None:
        """Apply vLLM's batch changes in its order: removed, added, moved."""
        if batch_update is None:
            return
        for index in batch_update.removed:
            self.requests.pop(index, None)
        for added in batch_update.added:
            index, params, output = added[0], added[1], added[-1]
            opts = params_format(params)
            if opts is None:
                self.requests.pop(index, None)
            else:
                self.requests[index] = _FormatRequest(opts, output)
        _move_rows(self.requests, batch_update.moved)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Constrain each opted-in row by its grammar state; other rows pass through."""
        if not self.requests:
            return logits
        groups: dict[tuple, list[int]] = {}
        for i, r in self.requests.items():
            if i < logits.shape[0]:
                r.advance(self.kind_of, self.vocab.ids.step_end)
                groups.setdefault(r.key, []).append(i)
        out = logits
        for key, rows in groups.items():
            proc = self._proc(key)
            reqs = [self.requests[i] for i in rows]
            kind = torch.tensor([r.kind for r in reqs], device=logits.device)
            text_len = torch.tensor([r.text_len for r in reqs], device=logits.device)
            lengths = [len(r.output) for r in reqs]
            ends = torch.tensor([r.step_ends for r in reqs], device=logits.device)
            rules = proc.rules_from(kind, text_len, lambda sel, e=ends: e[sel],
                                    lambda n=lengths: torch.tensor(n, device=logits.device), max(lengths))
            idx = torch.tensor(rows, device=logits.device)
            out = out.index_copy(0, idx, proc.mask(out.index_select(0, idx), rules))
        return out


_VLLM_CLASSES: dict[str, type] = {}
_BASES = {"SteinerStepBoundsLogitsProcessor": StepBoundsBatchProcessor,
          "SteinerFormatLogitsProcessor": FormatBatchProcessor}


def __getattr__(name: str) -> Any:
    """``SteinerStepBoundsLogitsProcessor`` / ``SteinerFormatLogitsProcessor``: the v1 classes, subclasses
    of vLLM's LogitsProcessor (built on first access, so importing this module needs no vLLM)."""
    if name not in _BASES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _VLLM_CLASSES:
        from vllm.v1.sample.logits_processor import LogitsProcessor

        _VLLM_CLASSES[name] = type(name, (_BASES[name], LogitsProcessor), {"__module__": __name__})
    return _VLLM_CLASSES[name]


# the names steiner.infer exports
StepBoundsVLLMProcessor = StepBoundsBatchProcessor
FormatVLLMProcessor = FormatBatchProcessor
