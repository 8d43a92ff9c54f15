"""A continuous-batching decode engine: many requests share one batched forward pass per token.

Requests arrive on a thread-safe inbox. A single worker thread owns the model: when idle it waits
``batch_wait_ms`` after the first arrival to gather company, prefills the newcomers as one left-padded
batch, merges their KV cache into the running batch, and then decodes one token for every running row
per forward pass. Newcomers are admitted between any two decode steps (up to ``max_batch_size`` rows),
and finished rows are dropped from the cache at once, so throughput grows with concurrency and a short
request never waits for a long one. Every row carries its own sampling settings (temperature, top_p,
seed, stop strings, max_tokens) and its own logits processor (step bounds or the full format
processor, with that row's min/max steps), fed the row's own unpadded ids like a batch-of-one
``model.generate``. Tokens are streamed back per row as text deltas (incremental detokenisation).
"""

from __future__ import annotations

import inspect
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from steiner.infer.options import DecodeOptions, make_processors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams(DecodeOptions):
    """A request's `DecodeOptions` (``max_new_tokens`` is its max_tokens) plus what only the server does:
    ``n`` samples, ``stop`` strings, ``ignore_eos``, log-probs. Checked by the API layer first."""

    n: int = 1
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: bool = False
    top_logprobs: int = 0


# one generated token's log-probs: (token id, log-prob, [(id, log-prob) of the top_logprobs most likely])
LogprobEntry = tuple[int, float, list[tuple[int, float]]]


@dataclass
class Delta:
    """New completion text of choice ``index`` (raw, special tokens included) and, when the request
    asked for them, the log-probs of the tokens generated since the previous delta."""

    index: int
    text: str
    logprobs: list[LogprobEntry] | None = None


@dataclass
class Finished:
    """Choice ``index`` is done: its whole raw text, its token ids (eos excluded) and why it stopped."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str
    logprobs: list[LogprobEntry] | None = None  # one per token id, when asked for


@dataclass
class Failed:
    """The engine could not run this request; ``message`` says why."""

    message: str


Event = Delta | Finished | Failed


@dataclass
class EngineRequest:
    """A tokenised prompt, its settings, and ``emit`` (called from the worker thread) for its events."""

    prompt_ids: list[int]
    params: SamplingParams
    emit: Callable[[Event], None]
    stream: bool = True  # False: no Delta events, the text comes whole with Finished
    cancelled: threading.Event = field(default_factory=threading.Event)


def _growing_layer_class() -> type:
    """A transformers ``DynamicLayer`` that writes new keys/values into spare capacity (doubling when
    full) instead of concatenating: a decode step costs O(new tokens), not O(cache), per layer."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        SPARE = 64

        def adopt(self, keys: Any, values: Any, spare: int | None = None) -> None:
            """Hold ``keys``/``values`` (batch, heads, length, dim) with ``spare`` free positions after them."""
            import torch

            b, h, n, d = keys.shape
            cap = n + (self.SPARE if spare is None else spare)
            self._k = torch.empty((b, h, cap, d), dtype=keys.dtype, device=keys.device)
            self._v = torch.empty((b, h, cap, values.shape[-1]), dtype=values.dtype, device=values.device)
            self._k[:, :, :n] = keys
            self._v[:, :, :n] = values
            self._n = n
            self.keys, self.values = self._k[:, :, :n], self._v[:, :, :n]

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self.adopt(key_states, value_states)
                return self.keys, self.values
            t = key_states.shape[-2]
            if self._n + t > self._k.shape[-2]:
                self.adopt(self.keys, self.values, spare=max(self.SPARE, self._n))
            self._k[:, :, self._n : self._n + t] = key_states
            self._v[:, :, self._n : self._n + t] = value_states
            self._n += t
            self.keys, self.values = self._k[:, :, : self._n], self._v[:, :, : self._n]
            return self.keys, self.values

        def batch_select_indices(self, indices: Any) -> None:
            if self.is_initialized:
                self._k, self._v = self._k[indices], self._v[indices]
                self.keys, self.values = self._k[:, :, : self._n], self._v[:, :, : self._n]

    return GrowingLayer


_GROWING: type | None = None


def _new_cache(config: Any) -> Any:
    """A ``DynamicCache`` whose layers grow in place (`_growing_layer_class`)."""
    global _GROWING
    from transformers import DynamicCache

    if _GROWING is None:
        _GROWING = _growing_layer_class()
    cache = DynamicCache(config=config)
    for layer in cache.layers:
        if type(layer).__name__ == "DynamicLayer":  # sliding-window layers keep their own class
            layer.__class__ = _GROWING
    return cache


class _Row:
    """One sample being decoded: a request's choice ``index``."""

    def __init__(self, req: EngineRequest, index: int, processor: Any, generator: Any, buf: Any) -> None:
        self.req = req
        self.index = index
        self.processor = processor
        self.generator = generator
        self.buf = buf  # 1-D LongTensor: prompt ids then generated ids
        self.prompt_len = len(req.prompt_ids)
        self.length = self.prompt_len
        self.gen: list[int] = []
        self.text = ""
        self.sent = 0
        self.prefix_offset = 0
        self.read_offset = 0
        self.logprobs: list[LogprobEntry] | None = [] if req.params.logprobs else None
        self.lp_sent = 0


def make_processor(tokenizer: Any, params: SamplingParams) -> Any:
    """The logits processor for one row, from `steiner.infer.make_processors` (the step-bounds one even
    without bounds, so every completion opens its reasoning and starts a step after each decision).

    Both processors read only the completion (their carried state is checked on every call), so the
    engine shares one per setting and feeds it each row's ids from the last prompt token on
    (``prompt_lengths=1``).
    """
    [proc] = make_processors(tokenizer, params, prompt_lengths=1, step_bounds_always=True)
    return proc


class Engine:
    """Owns the model on one worker thread; `submit` requests from any thread.

    Args:
        model: a causal LM (transformers), already on its device.
        tokenizer: its fast tokenizer (with the reasoning tokens).
        max_batch_size: most rows (samples) decoded together.
        batch_wait_ms: how long an idle engine waits after the first request for others to join.
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_batch_size: int = 32, batch_wait_ms: float = 5.0) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.max_len = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
        eos = {tokenizer.eos_token_id}
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos |= set(gen_eos) if isinstance(gen_eos, list) else {gen_eos}
        self.eos_ids = sorted(i for i in eos if i is not None)
        self.device = next(model.parameters()).device
        backend = getattr(tokenizer, "backend_tokenizer", None)  # the Rust decoder skips a slow Python wrapper
        self._decode = (lambda ids: backend.decode(ids, skip_special_tokens=False)) if backend is not None else (
            lambda ids: tokenizer.decode(ids, skip_special_tokens=False))
        # transformers 5 names the forward argument `cache`; older releases `past_key_values`
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._inbox: queue.Queue[EngineRequest | None] = queue.Queue()
        self._pending: deque[EngineRequest] = deque()
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._mask: Any = None  # [B, S] attention mask of the cache (+ nothing for the next token yet)
        self._next_pos: Any = None  # [B] position of each row's next token
        self._last: Any = None  # [B] each row's last sampled token, fed next step
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._admitting: list[EngineRequest] = []
        self._processors: dict[tuple, Any] = {}
        self.steps = 0  # decode steps run (for tests and stats)
        self.max_rows_seen = 0

    def _processor(self, params: SamplingParams) -> Any:
        key = (params.strict, params.min_steps, params.max_steps, params.max_reasoning_tokens,
               params.max_new_tokens if params.strict else None)
        if key not in self._processors:
            if len(self._processors) > 256:
                self._processors.clear()
            self._processors[key] = make_processor(self.tokenizer, params)
        return self._processors[key]

    # ---- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="steiner-engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None

    def submit(self, req: EngineRequest) -> None:
        """Queue a request; its events arrive through ``req.emit`` on the worker thread."""
        if req.params.n > self.max_batch_size:
            raise ValueError(f"n={req.params.n} exceeds max_batch_size={self.max_batch_size}")
        self.start()
        self._inbox.put(req)

    # ---- worker ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while not self._stop.is_set():
                try:
                    self._collect()
                    if self._stop.is_set():
                        break
                    self._admit()
                    if self._rows:
                        self._step()
                except Exception as e:  # noqa: BLE001 - one bad batch must not kill the server
                    log.exception("engine step failed")
                    reqs = [r.req for r in self._rows] + self._admitting
                    for req in {id(q): q for q in reqs}.values():
                        req.emit(Failed(f"generation failed: {e}"))
                    self._reset()
                    self._admitting = []

    def _collect(self) -> None:
        """Move inbox requests to pending; when idle, block for one and wait a little for company."""
        if not self._rows and not self._pending:
            item = self._inbox.get()
            if item is None:
                return
            self._pending.append(item)
            deadline = time.monotonic() + self.batch_wait_s
            while (left := deadline - time.monotonic()) > 0:
                try:
                    item = self._inbox.get(timeout=left)
                except queue.Empty:
                    break
                if item is None:
                    return
                self._pending.append(item)
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._pending.append(item)

    def _reset(self) -> None:
        self._rows, self._cache, self._mask, self._next_pos, self._last = [], None, None, None, None

    def _admit(self) -> None:
        """Prefill the pending requests that fit and merge them into the running batch."""
        import torch

        new: list[EngineRequest] = []
        free = self.max_batch_size - len(self._rows)
        while self._pending and self._pending[0].params.n <= free:
            req = self._pending.popleft()
            if req.cancelled.is_set():
                continue
            new.append(req)
            free -= req.params.n
        if not new:
            return
        self._admitting = new
        rows: list[_Row] = []
        for req in new:
            try:
                for i in range(req.params.n):
                    proc = self._processor(req.params)
                    gen = None
                    if req.params.seed is not None:
                        gen = torch.Generator(device=self.device).manual_seed((req.params.seed + i) % 2**64)
                    size = min(len(req.prompt_ids) + req.params.max_new_tokens, self.max_len) + 1
                    buf = torch.zeros(size, dtype=torch.long, device=self.device)
                    buf[: len(req.prompt_ids)] = torch.tensor(req.prompt_ids, dtype=torch.long)
                    rows.append(_Row(req, i, proc, gen, buf))
            except Exception as e:  # noqa: BLE001 - a processor that cannot be built fails only this request
                rows = [r for r in rows if r.req is not req]
                req.emit(Failed(str(e)))
        if not rows:
            return
        plen = max(r.prompt_len for r in rows)
        ids = torch.full((len(rows), plen), self.tokenizer.pad_token_id or 0, dtype=torch.long, device=self.device)
        mask = torch.zeros((len(rows), plen), dtype=torch.long, device=self.device)
        for j, r in enumerate(rows):
            ids[j, plen - r.prompt_len :] = r.buf[: r.prompt_len]
            mask[j, plen - r.prompt_len :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = _new_cache(self.model.config)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, **{self._cache_kw: cache},
                         use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1, :].float()
        next_pos = torch.tensor([r.prompt_len for r in rows], dtype=torch.long, device=self.device)
        self._merge(rows, cache, mask, next_pos)
        self._admitting = []
        self._sample_and_emit(logits, offset=len(self._rows) - len(rows))

    def _merge(self, rows: list[_Row], cache: Any, mask: Any, next_pos: Any) -> None:
        """Append prefilled rows to the running batch, left-padding whichever cache is shorter."""
        import torch

        if not self._rows:
            self._rows, self._cache, self._mask, self._next_pos = rows, cache, mask, next_pos
            self._last = torch.zeros(len(rows), dtype=torch.long, device=self.device)
            return
        s_old, s_new = self._mask.shape[1], mask.shape[1]
        s = max(s_old, s_new)

        def pad(t: Any, n: int, dim: int) -> Any:
            if n == 0:
                return t
            shape = list(t.shape)
            shape[dim] = n
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        for old_layer, new_layer in zip(self._cache.layers, cache.layers, strict=True):
            keys = torch.cat([pad(old_layer.keys, s - s_old, -2), pad(new_layer.keys, s - s_new, -2)])
            values = torch.cat([pad(old_layer.values, s - s_old, -2), pad(new_layer.values, s - s_new, -2)])
            if hasattr(old_layer, "adopt"):
                old_layer.adopt(keys, values)
            else:
                old_layer.keys, old_layer.values = keys, values
        self._mask = torch.cat([pad(self._mask, s - s_old, 1), pad(mask, s - s_new, 1)])
        self._next_pos = torch.cat([self._next_pos, next_pos])
        self._last = torch.cat([self._last, torch.zeros(len(rows), dtype=torch.long, device=self.device)])
        self._rows = self._rows + rows

    def _step(self) -> None:
        """One decode step for every running row."""
        import torch

        b = len(self._rows)
        self.max_rows_seen = max(self.max_rows_seen, b)
        self._mask = torch.cat([self._mask, self._mask.new_ones((b, 1))], dim=1)
        out = self.model(input_ids=self._last[:, None], attention_mask=self._mask,
                         position_ids=self._next_pos[:, None], **{self._cache_kw: self._cache}, use_cache=True)
        self._next_pos = self._next_pos + 1
        self.steps += 1
        self._sample_and_emit(out.logits[:, -1, :].float(), offset=0)

    def _sample_and_emit(self, logits: Any, offset: int) -> None:
        """Process, sample and append one token for rows ``offset:``; retire finished rows."""
        import torch

        rows = self._rows[offset:]
        want = [j for j, r in enumerate(rows) if r.logprobs is not None]
        raw_lp = torch.log_softmax(logits[want, : len(self.tokenizer)], -1) if want else None
        scores = self._constrain(logits, rows)
        tokens = self._sample(scores, rows)
        self._last[offset:] = tokens
        entries = self._logprobs(raw_lp, tokens, rows, want) if want else {}
        done: list[int] = []
        for j, (r, tok) in enumerate(zip(rows, tokens.tolist(), strict=True)):
            if j in entries and (tok not in self.eos_ids or r.req.params.ignore_eos):
                r.logprobs.append(entries[j])
            reason = self._append(r, tok)
            if r.req.cancelled.is_set():
                done.append(offset + j)
            elif reason is not None:
                r.req.emit(Finished(r.index, r.text, list(r.gen), reason, r.logprobs))
                done.append(offset + j)
        if done:
            self._retire(done)

    @staticmethod
    def _logprobs(raw_lp: Any, tokens: Any, rows: list[_Row], want: list[int]) -> dict[int, LogprobEntry]:
        """The sampled token's log-prob and the top ``top_logprobs`` of each row in ``want``, from the
        model's own distribution (before temperature, top_p and logits processors)."""
        chosen_ids = tokens[want]
        chosen = raw_lp.gather(1, chosen_ids[:, None]).squeeze(1).tolist()
        k = max(rows[j].req.params.top_logprobs for j in want)
        top_v, top_i = raw_lp.topk(k, dim=-1) if k else (None, None)
        top_v, top_i = (top_v.tolist(), top_i.tolist()) if k else ([], [])
        out = {}
        for n, j in enumerate(want):
            kj = rows[j].req.params.top_logprobs
            out[j] = (int(chosen_ids[n]), chosen[n], list(zip(top_i[n][:kj], top_v[n][:kj], strict=True)) if kj else [])
        return out

    def _constrain(self, logits: Any, rows: list[_Row]) -> Any:
        """Apply each row's logits processor, one call per group of rows sharing a processor.

        A group's completions are left-padded into one matrix (the last prompt token first) and the
        processor is told where each row's completion starts, so it runs vectorised over the group.
        """
        import torch
        from torch.nn.utils.rnn import pad_sequence

        from steiner.infer.step_bounds import CompletionStart

        scores = logits
        groups: dict[int, list[int]] = {}
        for j, r in enumerate(rows):
            groups.setdefault(id(r.processor), []).append(j)
        for js in groups.values():
            proc = rows[js[0]].processor
            seqs = [rows[j].buf[rows[j].prompt_len - 1 : rows[j].length] for j in js]
            if len(seqs) == 1:
                ids = seqs[0].unsqueeze(0)
            else:
                ids = pad_sequence(seqs, batch_first=True, padding_value=0, padding_side="left")
            proc.start = CompletionStart([ids.shape[1] - len(q) + 1 for q in seqs])
            idx = torch.tensor(js, device=scores.device)
            scores = scores.index_copy(0, idx, proc(ids, scores.index_select(0, idx)))
        ignore = [j for j, r in enumerate(rows) if r.req.params.ignore_eos]
        if ignore and self.eos_ids:
            scores[torch.tensor(ignore)[:, None], torch.tensor(self.eos_ids)[None, :]] = float("-inf")
        return scores

    def _sample(self, scores: Any, rows: list[_Row]) -> Any:
        import torch

        temps = torch.tensor([r.req.params.temperature for r in rows], device=scores.device)
        top_p = torch.tensor([r.req.params.top_p for r in rows], device=scores.device)
        greedy = temps <= 0
        tokens = scores.argmax(-1)
        if bool(greedy.all()):
            return tokens
        probs = torch.softmax(scores / temps.clamp(min=1e-5)[:, None], dim=-1)
        if bool((top_p < 1).any()):
            sp, si = probs.sort(dim=-1, descending=True)
            drop = (sp.cumsum(-1) - sp) > top_p[:, None]
            sp = sp.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, si, sp)
        probs = torch.nan_to_num(probs, nan=0.0)
        free = [j for j, r in enumerate(rows) if not greedy[j] and r.generator is None]
        if free:
            # exponential race: argmax(p / E) with E ~ Exp(1) samples from p, vectorised over rows
            race = torch.empty_like(probs[free]).exponential_()
            tokens[free] = (probs[free] / race).argmax(-1)
        for j, r in enumerate(rows):
            if not greedy[j] and r.generator is not None:
                race = torch.empty_like(probs[j]).exponential_(generator=r.generator)
                tokens[j] = (probs[j] / race).argmax(-1)
        return tokens

    def _append(self, r: _Row, tok: int) -> str | None:
        """Add one token to a row, emit its new text; return a finish reason or None."""
        p = r.req.params
        if tok in self.eos_ids and not p.ignore_eos:
            if not (r.req.stream or p.stop):
                r.text = self._decode(r.gen)
            return self._flush(r, "stop")
        r.buf[r.length] = tok
        r.length += 1
        r.gen.append(tok)
        if not (r.req.stream or p.stop):  # nobody reads the text before the end: decode it once
            if len(r.gen) >= p.max_new_tokens or r.length >= self.max_len:
                r.text = self._decode(r.gen)
                return self._flush(r, "length")
            return None
        if len(r.gen) == 1:
            r.prefix_offset = r.read_offset = r.prompt_len
        ids = r.buf[r.prefix_offset : r.length].tolist()
        prefix = self._decode(ids[: r.read_offset - r.prefix_offset])
        full = self._decode(ids)
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            start = len(r.text)
            r.text += full[len(prefix) :]
            r.prefix_offset, r.read_offset = r.read_offset, r.length
            for s in p.stop:
                hit = r.text.find(s, max(0, start - len(s) + 1))
                if hit >= 0:
                    r.text = r.text[:hit]
                    return self._flush(r, "stop")
        if len(r.gen) >= p.max_new_tokens or r.length >= self.max_len:
            return self._flush(r, "length")
        hold = max((len(s) for s in p.stop), default=1) - 1
        upto = len(r.text) - hold
        if upto > r.sent or (r.logprobs and upto >= r.sent and len(r.logprobs) > r.lp_sent):
            r.req.emit(Delta(r.index, r.text[r.sent : upto], self._new_logprobs(r)))
            r.sent = max(r.sent, upto)
        return None

    @staticmethod
    def _new_logprobs(r: _Row) -> list[LogprobEntry] | None:
        if r.logprobs is None:
            return None
        new, r.lp_sent = r.logprobs[r.lp_sent :], len(r.logprobs)
        return new

    def _flush(self, r: _Row, reason: str) -> str:
        if r.req.stream and (len(r.text) > r.sent or (r.logprobs and len(r.logprobs) > r.lp_sent)):
            r.req.emit(Delta(r.index, r.text[r.sent :], self._new_logprobs(r)))
            r.sent = len(r.text)
        return reason

    def _retire(self, done: list[int]) -> None:
        """Drop finished rows from the batch and the cache, then the padding no row needs any more."""
        import torch

        gone = set(done)
        keep = [j for j in range(len(self._rows)) if j not in gone]
        if not keep:
            self._reset()
            return
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        self._cache.batch_select_indices(idx)
        self._mask, self._next_pos, self._last = self._mask[idx], self._next_pos[idx], self._last[idx]
        self._rows = [self._rows[j] for j in keep]
        lead = int(self._mask.argmax(dim=1).min())  # columns that are padding for every row
        if lead > 0:
            for layer in self._cache.layers:
                if hasattr(layer, "adopt"):
                    layer.adopt(layer.keys[..., lead:, :], layer.values[..., lead:, :])
                else:
                    layer.keys, layer.values = layer.keys[..., lead:, :], layer.values[..., lead:, :]
            self._mask = self._mask[:, lead:]


_ids = itertools.count()


def request_id() -> str:
    """A unique completion id (``chatcmpl-...``)."""
    return f"chatcmpl-{int(time.time() * 1000):x}{next(_ids):06x}"

