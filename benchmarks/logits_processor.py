"""The logits processors measured three ways: call time, generation speed, and well-formed share;
and generation speed by KV cache.

    .venv/bin/python benchmarks/logits_processor.py [--model DIR] [--sections micro,speed,quality]

``--model`` is a save_pretrained folder (the demo's is steiner-demo/<...>/sft or rl); without it a
random model shaped like the demo's (4 layers, 128 wide) is built here -- the harshest case for the
format, since it never learned to close anything.

speed: generation tokens/s (`model.generate`, sampling at temperature 1, ``--tokens`` new tokens) at
batch 1 and 16 with no processor, `StepBoundsLogitsProcessor` and `FormatLogitsProcessor`, and the
overhead of each against no processor (rounds interleaved, the best of ``--rounds`` kept, because
the machine may be shared).

quality: the share of completions that end with eos and parse with no problem, at temperature 1.0
and 1.5, with and without a system prompt, with and without the format processor (``--samples``
per cell, ``--tokens`` budget).

cache: `steiner.infer.generate` tokens/s, 96 completions at batch 32 with the format processor:
transformers' dynamic KV cache against the static one, one pass per batch against refilling every 64
tokens (``--sections cache``, not in the default set; ``--model`` takes a trained model).

micro: for completion lengths 100, 1000 and 4000 (batch 8), it replays consecutive decoding calls over a
synthetic completion (steps of ~80 tokens) and prints microseconds per call for:

- ``StepBoundsLogitsProcessor`` (ours: reads the last token; recounts step ends only at step ends),
- a naive variant that recounts ``(completion == step_end).sum(1)`` on every call,
- ``FormatLogitsProcessor`` (windowed search for the last structural token),
- ours in the worst case, every row sitting on a step end on every call.

Vocabulary widths: the tiny test tokenizer's (~416) and 151,936 (Qwen2.5's padded output layer;
the step-bounds cost depends on the logits' width, not on the tokenizer). Flat rows = O(1) in the
reasoning length.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter


def _tokenizer():
    from steiner.tokenizer import train_tokenizer

    corpus = ["Use the numbers 3, 5, 7 and 11 to reach 24. Step summary thought reflection."] * 50
    return train_tokenizer(corpus, vocab_size=400)


def _completion(ids, length: int, text_ids: list[int], gen):
    """A well-formed-looking completion of ``length`` tokens: steps of ~80 tokens."""
    import torch

    out = [ids.reasoning_start]
    while len(out) < length:
        out += [ids.step_start, ids.name_start]
        out += torch.tensor(text_ids)[torch.randint(len(text_ids), (70,), generator=gen)].tolist()
        out += [ids.name_end, ids.step_end, ids.proceed]
    return out[:length]


def _time_calls(proc, seqs, scores) -> float:
    """Median microseconds per call over consecutive lengths."""
    times = []
    for s in seqs:
        t0 = time.perf_counter()
        proc(s, scores)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def micro(calls: int = 200, batch: int = 8) -> None:
    import torch
    from rich.console import Console
    from rich.table import Table

    from steiner.infer import FormatLogitsProcessor, StepBoundsLogitsProcessor
    from steiner.infer.step_bounds import DECIDE, FREE, RuleTable, apply_rules, rule_tokens
    from steiner.infer.vocab import InferVocab
    from steiner.tokenizer import ReasoningTokenIds

    torch.set_num_threads(1)
    tok = _tokenizer()
    ids = ReasoningTokenIds.from_tokenizer(tok)
    text_ids = [i for i in range(len(tok)) if i not in set(tok.added_tokens_decoder)]
    gen = torch.Generator().manual_seed(0)
    prompt = 50

    class NaiveStepBounds(StepBoundsLogitsProcessor):
        """Recounts step ends over the whole completion on every call (the O(length) baseline)."""

        def rules(self, input_ids):
            starts = torch.full((input_ids.shape[0],), prompt)
            n = (input_ids[:, prompt:] == ids.step_end).sum(1)
            last = input_ids[:, -1]
            rules = torch.full_like(last, FREE)
            at_end = last == ids.step_end
            rules[at_end] = DECIDE
            rules[at_end & (n >= (self.max_steps or 10**9))] = 2
            rules[(last == ids.proceed) | (last == ids.backtrack)] = 5
            rules[input_ids.shape[1] - starts <= 0] = 1
            return rules

    table = Table(title=f"logits processor time per call (µs, median of {calls} consecutive calls, batch {batch})")
    for col in ("vocab", "completion length", "step bounds (ours)", "naive recount", "format", "ours, worst case"):
        table.add_column(col, justify="right")
    for width in (len(tok), 151_936):
        scores = torch.randn(batch, width)
        for length in (100, 1000, 4000):
            rows = [_completion(ids, length + calls, text_ids, gen) for _ in range(batch)]
            full = torch.tensor([[7] * prompt + r for r in rows])
            seqs = [full[:, : prompt + length + k] for k in range(calls)]
            ours = StepBoundsLogitsProcessor(tok, min_steps=1, max_steps=40, prompt_lengths=prompt)
            naive = NaiveStepBounds(tok, min_steps=1, max_steps=40, prompt_lengths=prompt)
            fmt = FormatLogitsProcessor(tok, min_steps=1, max_steps=40, prompt_lengths=prompt)
            worst_seqs = [torch.cat([s[:, :-1], torch.full((batch, 1), ids.step_end)], 1) for s in seqs]
            t_ours = _time_calls(ours, seqs, scores)
            t_naive = _time_calls(naive, seqs, scores)
            t_fmt = _time_calls(fmt, seqs, scores)
            t_worst = _time_calls(ours, worst_seqs, scores)
            table.add_row(f"{width:,}", f"{length:,}", f"{t_ours:.0f}", f"{t_naive:.0f}", f"{t_fmt:.0f}",
                          f"{t_worst:.0f}")
    rt = RuleTable(rule_tokens(InferVocab.from_tokenizer(tok)), 6)
    Console().print(table)
    # the masking alone, for scale: one constrained row per call
    r = torch.zeros(batch, dtype=torch.long)
    r[0] = 1
    s = torch.randn(batch, 151_936)
    t0 = time.perf_counter()
    for _ in range(50):
        apply_rules(s, r, rt)
    Console().print(f"apply_rules alone at vocab 151,936: {(time.perf_counter() - t0) / 50 * 1e6:.0f} µs per call")


SYSTEM = "You are a careful assistant. Think step by step and check each step."
QUESTION = "Using the numbers 3, 5, 7 and 11 once each with + - * /, reach 24."


def load_or_build(model_dir: str | None):
    """(model, tokenizer, description): the folder given, else a random demo-shaped model."""
    from steiner.tokenizer import load_model, load_tokenizer

    if model_dir:
        return load_model(model_dir).eval(), load_tokenizer(model_dir), model_dir
    from steiner.modeling import TinyModelConfig, build_model

    tok = _tokenizer()
    cfg = TinyModelConfig(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512)
    return build_model(tok, cfg).eval(), tok, f"random 4x128 model (vocab {len(tok)})"


def _processors(kind: str, tok, max_new_tokens: int) -> list:
    from steiner.infer import FormatLogitsProcessor, StepBoundsLogitsProcessor

    if kind == "step bounds":
        return [StepBoundsLogitsProcessor(tok, min_steps=1, max_steps=8)]
    if kind == "format":
        return [FormatLogitsProcessor(tok, min_steps=1, max_steps=8, max_new_tokens=max_new_tokens)]
    return []


class _Timed:
    """A logits processor wrapper that adds up the seconds spent inside the processor."""

    def __init__(self, inner) -> None:
        self.inner, self.seconds = inner, 0.0

    def __call__(self, input_ids, scores):
        t0 = time.perf_counter()
        out = self.inner(input_ids, scores)
        self.seconds += time.perf_counter() - t0
        return out


def speed(model, tok, tokens: int = 128, rounds: int = 3, batches: tuple[int, ...] = (1, 16)) -> list[dict]:
    """Generation tokens/s per batch size and processor (rows x decode steps / seconds, best round), and
    the processor's overhead measured inside the same runs: seconds in the processor / the rest (robust to
    a shared machine's load, which slows both alike)."""
    import torch
    from transformers import LogitsProcessorList

    text = tok.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                   add_generation_prompt=True)
    kinds = ("none", "step bounds", "format")
    best: dict[tuple[int, str], float] = {}
    share: dict[tuple[int, str], list[float]] = {}
    for b in batches:
        enc = tok([text] * b, return_tensors="pt", padding=True, add_special_tokens=False)
        for r in range(rounds):
            for kind in kinds:
                torch.manual_seed(r)
                procs = [_Timed(p) for p in _processors(kind, tok, tokens)]
                t0 = time.perf_counter()
                with torch.inference_mode():
                    out = model.generate(**enc, max_new_tokens=tokens, do_sample=True, temperature=1.0, top_k=0,
                                         logits_processor=LogitsProcessorList(procs), pad_token_id=tok.pad_token_id)
                dt = time.perf_counter() - t0
                rate = b * (out.shape[1] - enc["input_ids"].shape[1]) / dt
                best[b, kind] = max(best.get((b, kind), 0.0), rate)
                inside = sum(p.seconds for p in procs)
                share.setdefault((b, kind), []).append(inside / (dt - inside))
    return [{"batch": b, "processor": kind, "tok_s": best[b, kind], "vs_none": best[b, "none"] / best[b, kind] - 1,
             "overhead": statistics.median(share[b, kind])} for b in batches for kind in kinds]


def cache_speed(model, tok, tokens: int = 400, rounds: int = 3, batch: int = 32, rows: int = 96) -> list[dict]:
    """`steiner.infer.generate` tokens/s over ``rows`` completions, ``batch`` at a time: transformers'
    dynamic KV cache (grows by concatenation: every token re-copies the whole cache) against the static
    one (preallocated, written in place), each in one pass per batch and refilled every 64 tokens
    (finished rows leave, waiting ones join); same seeds and format processor, rounds interleaved, the
    best kept. Refilling can only pay where completions differ in length; where rows run to the budget
    it costs the re-feeding (measured: 313 against 758 tokens/s, docs/infer.md), which is why it is off."""
    from steiner.infer import generate

    convo = [{"role": "user", "content": QUESTION}]
    kinds = {"dynamic, one pass": ("dynamic", None), "static, one pass": ("static", None),
             "dynamic, refill 64": ("dynamic", 64), "static, refill 64": ("static", 64)}
    best: dict[str, float] = {}
    for r in range(rounds):
        for name, (impl, refill) in kinds.items():
            t0 = time.perf_counter()
            [gens] = generate(model, tok, [convo], n=rows, batch_size=batch, max_new_tokens=tokens, temperature=1.0,
                              seed=r, format_strict=True, cache_implementation=impl, refill_tokens=refill)
            dt = time.perf_counter() - t0
            best[name] = max(best.get(name, 0.0), sum(len(g.token_ids) for g in gens) / dt)
    base = best["dynamic, one pass"]
    return [{"cache": name, "tok_s": best[name], "vs_dynamic": best[name] / base} for name in kinds]


def quality(model, tok, samples: int = 32, tokens: int = 128, seed: int = 0) -> list[dict]:
    """Well-formed share per temperature x system prompt x processor."""
    from steiner.infer import generate

    rows = []
    for temperature in (1.0, 1.5):
        for system in (None, SYSTEM):
            convo = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": QUESTION}]
            for strict in (False, True):
                [gens] = generate(model, tok, [convo], n=samples, max_new_tokens=tokens, temperature=temperature,
                                  seed=seed, format_strict=strict, batch_size=16)
                ok = sum(g.finish_reason == "stop" and g.path.ok and g.path.complete for g in gens)
                seen = Counter(p.code for g in gens for p in {q.code: q for q in g.path.problems}.values())
                seen.update(["finish=length"] * sum(g.finish_reason == "length" for g in gens))
                problems = [f"{code} ({k})" for code, k in seen.most_common(3)]
                rows.append({"temperature": temperature, "system": bool(system), "format": strict, "ok": ok,
                             "n": len(gens), "problems": problems})
    return rows


def main(argv: list[str] | None = None) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="save_pretrained folder (default: a random demo-shaped model)")
    ap.add_argument("--sections", default="speed,quality,micro", help="which tables: speed, quality, micro, cache")
    ap.add_argument("--tokens", type=int, default=128, help="new tokens per completion (speed, quality)")
    ap.add_argument("--rounds", type=int, default=3, help="speed: interleaved rounds, best kept")
    ap.add_argument("--samples", type=int, default=32, help="quality: completions per cell")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--calls", type=int, default=200, help="micro: consecutive calls timed per cell")
    ap.add_argument("--batch", type=int, default=8, help="micro: rows per call")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    sections = set(a.sections.split(","))
    console = Console(width=120)
    if sections & {"speed", "quality", "cache"}:
        model, tok, what = load_or_build(a.model)
    if "speed" in sections:
        t = Table(title=f"generation tokens/s, {what}, {a.tokens} new tokens, {a.threads} thread(s)")
        for col in ("batch", "processor", "tokens/s (best)", "slower than none", "time in processor / rest"):
            t.add_column(col, justify="right")
        for r in speed(model, tok, a.tokens, a.rounds):
            none = r["processor"] == "none"
            t.add_row(str(r["batch"]), r["processor"], f"{r['tok_s']:.0f}", "-" if none else f"{100 * r['vs_none']:+.1f}%",
                      "-" if none else f"{100 * r['overhead']:.1f}%")
        console.print(t)
    if "cache" in sections:
        t = Table(title=f"generate() tokens/s, {what}, 96 completions, batch 32, up to {a.tokens} new tokens, format processor")
        for col in ("KV cache, batching", "tokens/s (best)", "x dynamic, one pass"):
            t.add_column(col, justify="right")
        for r in cache_speed(model, tok, a.tokens, a.rounds):
            t.add_row(r["cache"], f"{r['tok_s']:.0f}", f"{r['vs_dynamic']:.2f}")
        console.print(t)
    if "quality" in sections:
        t = Table(title=f"well-formed completions (eos within {a.tokens} tokens, no parse problem), {what}")
        for col in ("temperature", "system prompt", "format processor", "well-formed", "most common problems (completions)"):
            t.add_column(col, justify="right")
        for r in quality(model, tok, a.samples, a.tokens):
            t.add_row(f"{r['temperature']:.1f}", "yes" if r["system"] else "no", "on" if r["format"] else "off",
                      f"{r['ok']}/{r['n']}", ", ".join(r["problems"]) or "-")
        console.print(t)
    if "micro" in sections:
        micro(a.calls, a.batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
