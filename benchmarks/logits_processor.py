"""Time per decoded token of the step-bounds (and format) logits processors as reasoning grows.

    .venv/bin/python benchmarks/logits_processor.py [--calls 200] [--batch 8]

For completion lengths 100, 1000 and 4000 (batch 8), it replays consecutive decoding calls over a
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


def main(calls: int = 200, batch: int = 8) -> None:
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


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200, help="consecutive calls timed per cell")
    ap.add_argument("--batch", type=int, default=8, help="rows per call")
    a = ap.parse_args()
    main(a.calls, a.batch)
