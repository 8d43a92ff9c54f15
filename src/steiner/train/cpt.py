"""Stage 1, continual pre-training: plain text mixed with rendered reasoning paths, packed into blocks.

The model reads long reasoning streams before it ever sees a chat turn, and every weight trains,
the 14 new token embeddings included (they start as word means and only learn here and in SFT).
Documents are shuffled, joined with eos and cut into ``max_length``-token blocks; the loss covers
every token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steiner.config import ConfigError, check_range, opt
from steiner.jsonl import iter_records
from steiner.train.common import (
    TrainConfig,
    finish,
    load_model_and_tokenizer,
    read_paths,
    run_trainer,
    trainer_kwargs,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class CPTConfig(TrainConfig):
    """Continual pre-training on plain text + rendered reasoning paths."""

    output_dir: str = opt("runs/cpt", "where checkpoints and the final model folder go")
    learning_rate: float = opt(3e-4, "peak learning rate")
    max_length: int = opt(512, "block size: tokens per packed training block")
    paths_files: list[str] = opt([], "paths.jsonl files whose rendered reasoning paths join the mixture")
    text_files: list[str] = opt([], "plain-text files: .txt (documents split at blank lines) or .jsonl with a 'text' field")
    text_dataset: str | None = opt(None, "Hugging Face dataset name for plain text (needs network; 'text' column)")
    text_dataset_split: str = opt("train", "split of text_dataset")
    text_dataset_max_docs: int = opt(10000, "read at most this many documents of text_dataset")
    reasoning_ratio: float = opt(0.5, "fraction of training tokens from reasoning paths; the larger side is subsampled")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("reasoning_ratio", self.reasoning_ratio, lo=0, hi=1)
        check_range("text_dataset_max_docs", self.text_dataset_max_docs, lo=1)
        if not self.paths_files and not self.text_files and not self.text_dataset:
            raise ConfigError("paths_files, text_files, text_dataset: give at least one data source")


def read_text_files(files: list[str]) -> list[str]:
    """Plain-text documents: a .txt splits at blank lines; a .jsonl gives each record's "text"."""
    docs: list[str] = []
    for f in files:
        p = Path(f)
        if not p.is_file():
            raise FileNotFoundError(f"text file {str(p)!r} does not exist")
        if p.suffix == ".jsonl":
            for where, rec in iter_records(p, "text"):
                if not isinstance(rec.get("text"), str):
                    raise ValueError(f"{where}: record has no string 'text' field")
                docs.append(rec["text"])
        elif p.suffix in (".txt", ".md", ""):
            docs += [d.strip() for d in p.read_text().split("\n\n") if d.strip()]
        else:
            raise ValueError(f"text file {str(p)!r}: expected .txt or .jsonl, got {p.suffix!r}")
    return docs


def read_text_dataset(name: str, split: str, max_docs: int) -> list[str]:
    """Plain text from the Hugging Face hub (streamed; needs network)."""
    from datasets import load_dataset

    ds = load_dataset(name, split=split, streaming=True)
    docs = []
    for row in ds:
        if "text" not in row:
            raise ValueError(f"dataset {name!r} has no 'text' column (columns: {sorted(row)})")
        docs.append(row["text"])
        if len(docs) >= max_docs:
            break
    return docs


def reasoning_documents(paths_files: list[str]) -> list[str]:
    """One document per path: the question, a newline, then the rendered reasoning and answer."""
    from steiner.format import render

    return [f"{rec['question']}\n{render(path)}" for rec, path in read_paths(paths_files)]


def take_documents(docs: list[list[int]], budget: float, rng: random.Random) -> list[list[int]]:
    """Random documents until ``budget`` tokens are reached (the last one may overshoot)."""
    order = list(range(len(docs)))
    rng.shuffle(order)
    out, total = [], 0
    for i in order:
        if total >= budget:
            break
        out.append(docs[i])
        total += len(docs[i])
    return out


def mix(text: list[list[int]], reasoning: list[list[int]], ratio: float, seed: int) -> list[list[int]]:
    """Subsample the over-represented side so reasoning tokens make up about ``ratio`` of the mixture."""
    rng = random.Random(seed)
    t, r = sum(map(len, text)), sum(map(len, reasoning))
    if ratio >= 1 or not text:
        text = []
    elif ratio <= 0 or not reasoning:
        reasoning = []
    elif r / (r + t) > ratio:
        reasoning = take_documents(reasoning, t * ratio / (1 - ratio), rng)
    else:
        text = take_documents(text, r * (1 - ratio) / ratio, rng)
    docs = text + reasoning
    rng.shuffle(docs)
    return docs


def pack_blocks(docs: list[list[int]], eos_id: int, block_size: int) -> list[list[int]]:
    """Join documents, each followed by eos, and cut the stream into full ``block_size`` blocks."""
    stream: list[int] = []
    for d in docs:
        stream.extend(d)
        stream.append(eos_id)
    n = len(stream) // block_size
    return [stream[i * block_size : (i + 1) * block_size] for i in range(n)]


def build_blocks(cfg: CPTConfig, tokenizer: PreTrainedTokenizerBase) -> tuple[list[list[int]], dict[str, Any]]:
    """Read, tokenize, mix and pack the CPT data; return the blocks and token counts."""
    text_docs = read_text_files(cfg.text_files)
    if cfg.text_dataset:
        text_docs += read_text_dataset(cfg.text_dataset, cfg.text_dataset_split, cfg.text_dataset_max_docs)
    reason_docs = reasoning_documents(cfg.paths_files) if cfg.paths_files else []

    def encode(docs: list[str]) -> list[list[int]]:
        return tokenizer(docs, add_special_tokens=False)["input_ids"] if docs else []

    text_ids, reason_ids = encode(text_docs), encode(reason_docs)
    docs = mix(text_ids, reason_ids, cfg.reasoning_ratio, cfg.seed)
    reason_set = {id(d) for d in reason_ids}
    stats = {
        "text_documents": sum(id(d) not in reason_set for d in docs),
        "reasoning_documents": sum(id(d) in reason_set for d in docs),
        "reasoning_tokens": sum(len(d) for d in docs if id(d) in reason_set),
        "text_tokens": sum(len(d) for d in docs if id(d) not in reason_set),
    }
    blocks = pack_blocks(docs, tokenizer.eos_token_id, cfg.max_length)
    if not blocks:
        total = stats["reasoning_tokens"] + stats["text_tokens"] + len(docs)
        raise ValueError(f"max_length: the mixture holds {total} tokens, fewer than one block of {cfg.max_length}")
    stats["blocks"] = len(blocks)
    return blocks, stats


def main(cfg: CPTConfig) -> Path:
    """Run CPT; return the output folder (a save_pretrained model with tokenizer and chat template)."""
    from datasets import Dataset
    from rich.console import Console
    from transformers import Trainer, TrainingArguments, default_data_collator

    model, tok = load_model_and_tokenizer(cfg)
    blocks, stats = build_blocks(cfg, tok)
    args = TrainingArguments(**trainer_kwargs(cfg))
    if args.process_index == 0:
        Console(stderr=True).print(
            f"[bold]CPT[/] {stats['blocks']} blocks of {cfg.max_length} tokens: "
            f"{stats['reasoning_tokens']} reasoning + {stats['text_tokens']} text tokens"
        )
    ds = Dataset.from_dict({"input_ids": blocks, "labels": blocks})
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=default_data_collator)
    summary = run_trainer(trainer, cfg)
    return finish(trainer, tok, cfg, {**summary, "data": stats}, "cpt")
