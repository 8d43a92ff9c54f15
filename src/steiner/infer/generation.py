"""Batched generation with a transformers model: chat prompts in, parsed reasoning paths out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from steiner.format import REASONING_END, ReasoningPath, parse, split_reasoning
from steiner.infer.options import DecodeOptions, make_processors

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class Generation:
    """One completion.

    ``text`` holds the completion with its special tokens but without the trailing eos;
    ``token_ids`` the matching ids. ``reasoning`` is the text up to and including
    ``<|reasoning_end|>`` (all of it if reasoning never ended), ``answer`` what follows, stripped.
    ``reasoning_tokens`` counts the ids up to and including ``<|reasoning_end|>``;
    ``completion_tokens`` counts every generated id, the eos included (as vLLM and OpenAI count).
    """

    text: str
    token_ids: list[int]
    path: ReasoningPath
    reasoning: str
    answer: str
    reasoning_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]


def render_prompts(tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Sequence[dict]]) -> list[str]:
    """Each conversation through the chat template, ending with the assistant generation prompt."""
    prompts = []
    for i, conv in enumerate(conversations):
        if not isinstance(conv, list | tuple) or not all(isinstance(m, dict) and "role" in m for m in conv):
            raise ValueError(f"conversation {i} must be a list of {{'role', 'content'}} messages, got {conv!r:.80}")
        prompts.append(tokenizer.apply_chat_template(list(conv), tokenize=False, add_generation_prompt=True))
    return prompts


def make_generation(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], *, stop: Sequence[str] | None = None,
                    eos_ids: Sequence[int] = ()) -> Generation:
    """Build a `Generation` from raw completion ids: cut at the first eos (or stop string), parse."""
    ids = list(ids)
    finish: Literal["stop", "length"] = "length"
    generated = len(ids)
    for j, tid in enumerate(ids):
        if tid in eos_ids:
            ids, finish, generated = ids[:j], "stop", j + 1
            break
    text = tokenizer.decode(ids, skip_special_tokens=False)
    if stop:
        cut = min((text.find(s) for s in stop if s and s in text), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
            # keep the ids whose decoded text fits in the cut text
            while ids and len(tokenizer.decode(ids, skip_special_tokens=False)) > cut:
                ids.pop()
            generated = len(ids)
    reasoning, answer = split_reasoning(text)
    end_id = tokenizer.convert_tokens_to_ids(REASONING_END)
    reasoning_tokens = ids.index(end_id) + 1 if end_id in ids else len(ids)
    return Generation(
        text=text,
        token_ids=ids,
        path=parse(text),
        reasoning=reasoning,
        answer=answer.strip(),
        reasoning_tokens=reasoning_tokens,
        completion_tokens=generated,
        finish_reason=finish,
    )


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: list[list[dict]],
    options: DecodeOptions | None = None,
    *,
    n: int = 1,
    batch_size: int = 16,
    stop: list[str] | None = None,
    cache_implementation: str | None = "auto",
    refill_tokens: int | None = None,
    **decode: Any,
) -> list[list[Generation]]:
    """Sample ``n`` completions per conversation; result[i][j] is sample j of conversation i.

    ``options`` (`DecodeOptions`) says how to sample; its fields may instead be given as keywords
    (``max_new_tokens=64, temperature=0.7, ...``). Prompts are rendered with the tokenizer's chat
    template (``add_generation_prompt=True``) and generated ``batch_size`` rows at a time, left padded.
    With ``refill_tokens`` set, after each pass of at least that many new tokens (and at least as many
    as the longest completion so far) the finished rows leave the batch and waiting ones take their
    place, the rows still going fed again (prompt + completion so far). Off by default: measured
    slower here, 313 against 758 tokens/s with the static cache, where every row ran to the budget
    (benchmarks/logits_processor.py --sections cache). The logits processors
    come from `make_processors`, told where each row's completion starts. ``stop`` strings end a completion early
    (the stop string is not included).

    ``cache_implementation`` is transformers' KV cache: ``"auto"`` takes ``"static"`` on a CPU (a
    growing cache re-copies every key and value on every token: 1.5x slower for the demo's model, see
    benchmarks/logits_processor.py --sections cache) and the library's default elsewhere.
    """
    import torch
    from transformers import LogitsProcessorList

    if options is None:
        options = DecodeOptions(**decode)
    elif decode:
        raise TypeError(f"give options or decode keywords, not both (got {sorted(decode)})")
    for name, value in (("n", n), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if refill_tokens is not None and (isinstance(refill_tokens, bool) or not isinstance(refill_tokens, int)
                                      or refill_tokens < 1):
        raise ValueError(f"refill_tokens must be an integer >= 1 or None, got {refill_tokens!r}")
    max_new_tokens, temperature, top_p, seed = (options.max_new_tokens, options.temperature, options.top_p,
                                                options.seed)
    prompts = render_prompts(tokenizer, conversations)
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    rows = [i for i in range(len(prompts)) for _ in range(n)]  # row -> its prompt
    eos_ids = [tokenizer.eos_token_id]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    if seed is not None:
        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 else dict(
        do_sample=False, temperature=None, top_p=None, top_k=None)
    if cache_implementation == "auto":
        cache_implementation = "static" if device.type == "cpu" else None
    cache = {"cache_implementation": cache_implementation} if cache_implementation else {}
    chunk = min(refill_tokens or max_new_tokens, max_new_tokens)
    completions: list[list[int]] = [[] for _ in rows]
    pending = list(range(len(rows)))[::-1]  # popped from the end: rows in order
    active: list[int] = []
    was_training = model.training
    model.eval()
    try:
        while pending or active:
            while len(active) < batch_size and pending:
                active.append(pending.pop())
            seqs_in = [prompt_ids[rows[r]] + completions[r] for r in active]
            width = max(len(x) for x in seqs_in)
            input_ids = torch.full((len(active), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(active), width), dtype=torch.long)
            for k, x in enumerate(seqs_in):
                input_ids[k, width - len(x):] = torch.tensor(x, dtype=torch.long)
                attention[k, width - len(x):] = 1
            # where each row's completion starts in the padded batch (the processors count from there)
            starts = [width - len(x) + len(prompt_ids[rows[r]]) for r, x in zip(active, seqs_in, strict=True)]
            left = [max_new_tokens - len(completions[r]) for r in active]
            # a pass runs at least as long as the longest completion so far: every refill feeds the rows
            # again, so the passes grow geometrically and the re-feeding costs about two prompt passes
            # over the final lengths (fixed 64-token passes re-fed 800-token rows 12 times: slower than
            # not refilling at all)
            steps = min(max(chunk, max(len(completions[r]) for r in active)), max(left))
            processors = make_processors(tokenizer, options, prompt_lengths=starts)
            with torch.inference_mode():
                seqs = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    max_new_tokens=steps,
                    logits_processor=LogitsProcessorList(processors),
                    eos_token_id=eos_ids,
                    pad_token_id=pad_id,
                    stop_strings=list(stop) if stop else None,
                    tokenizer=tokenizer if stop else None,
                    **sampling,
                    **cache,
                )
            still = []
            for r, new, budget in zip(active, seqs[:, width:].tolist(), left, strict=True):
                new = new[:budget]
                end = next((j for j, t in enumerate(new) if t in eos_ids), None)
                completions[r] += new if end is None else new[: end + 1]
                finished = end is not None or len(completions[r]) >= max_new_tokens or len(new) < min(steps, budget)
                if not finished and stop:
                    text = tokenizer.decode(completions[r], skip_special_tokens=False)
                    finished = any(s and s in text for s in stop)
                if not finished:
                    still.append(r)
            active = still
    finally:
        model.train(was_training)
    out = [make_generation(tokenizer, c, stop=stop, eos_ids=eos_ids) for c in completions]
    return [out[i * n : (i + 1) * n] for i in range(len(conversations))]
