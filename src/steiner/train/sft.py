"""Stage 2, supervised fine-tuning: reasoning paths as chat turns, loss on the assistant part only.

Each paths.jsonl record becomes ``[user: question, assistant: {content: final_answer, steps}]``,
rendered by the tokenizer's chat template. The template's ``{% generation %}`` markers give the
assistant-token mask; prompt tokens get label -100.

Packing puts conversations into rows of at most ``max_length`` tokens (best-fit decreasing, TRL's
`pack_dataset`); position ids restart at each conversation and no attention mask is passed, so
transformers builds a block-diagonal causal mask and attention stays inside each conversation. We
keep the rows apart instead of TRL's padding-free layout, which flattens a whole batch into one row:
with SDPA on a CPU its dense (batch*max_length)^2 mask made training 4x slower per token (measured).
The Trainer is transformers' own, with the collator below.

``text_files`` mixes plain text (the CPT corpus) back in, loss on every token, at ``text_ratio`` of the
tokens: replay that keeps what CPT taught. A small model fine-tuned on a few thousand searches alone
memorises them (train loss 0.04 after 2 epochs) and loses the skills the searches only use -- copying
an unseen target, the arithmetic -- so the demo mixes its drill text in (docs/demo.md has the figures).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steiner.config import ConfigError, check_range, opt
from steiner.train.common import (
    TrainConfig,
    finish,
    load_model_and_tokenizer,
    path_messages,
    read_paths,
    run_trainer,
    trainer_kwargs,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100


@dataclass
class SteinerSFTConfig(TrainConfig):
    """Supervised fine-tuning on chat-formatted reasoning paths."""

    output_dir: str = opt("runs/sft", "where checkpoints and the final model folder go")
    learning_rate: float = opt(2e-4, "peak learning rate")
    paths_files: list[str] = opt([], "paths.jsonl files: one conversation per reasoning path")
    packing: bool = opt(True, "pack conversations into max_length rows (padding-free, attention kept per conversation)")
    assistant_only_loss: bool = opt(True, "loss on assistant tokens only (prompt tokens get label -100)")
    too_long: str = opt("drop", "conversations longer than max_length: 'drop' them or 'truncate' them")
    text_files: list[str] = opt([], "plain-text files (.txt split at blank lines, or .jsonl 'text') replayed "
                                    "with loss on every token")
    text_ratio: float = opt(0.0, "share of SFT tokens from text_files (subsampled to it; all of them if too few)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.paths_files:
            raise ConfigError("paths_files: give at least one paths.jsonl file")
        if self.too_long not in ("drop", "truncate"):
            raise ConfigError(f"too_long: must be 'drop' or 'truncate', got {self.too_long!r}")
        check_range("text_ratio", self.text_ratio, lo=0, hi=0.99)
        if self.text_ratio > 0 and not self.text_files:
            raise ConfigError("text_ratio: give text_files to replay, or set text_ratio to 0")


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], *, assistant_only_loss: bool = True
) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` of one conversation; labels are -100 outside assistant output.

    Raises ValueError when the chat template marks no assistant tokens (no ``{% generation %}``).
    """
    enc = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids = list(enc["input_ids"])
    if not assistant_only_loss:
        return {"input_ids": ids, "labels": list(ids)}
    mask = list(enc["assistant_masks"])
    if not any(mask):
        raise ValueError(
            "the chat template marks no assistant tokens; it needs {% generation %} markers "
            "(steiner.tokenizer.chat_template() has them)"
        )
    # loss on the last assistant turn only: earlier turns are history, collapsed to summaries
    last = len(mask) - 1 - mask[::-1].index(1)
    first = last
    while first > 0 and mask[first - 1]:
        first -= 1
    return {"input_ids": ids,
            "labels": [t if first <= i <= last else IGNORE_INDEX for i, t in enumerate(ids)]}


def build_dataset(cfg: SteinerSFTConfig, tokenizer: PreTrainedTokenizerBase) -> tuple[Any, dict[str, Any]]:
    """The tokenized, labelled conversations as a `datasets.Dataset`, and counts of what was kept."""
    from datasets import Dataset

    rows: dict[str, list] = {"input_ids": [], "labels": []}
    dropped = truncated = 0
    for rec, _path in read_paths(cfg.paths_files):
        ex = tokenize_conversation(tokenizer, path_messages(rec), assistant_only_loss=cfg.assistant_only_loss)
        if len(ex["input_ids"]) > cfg.max_length:
            if cfg.too_long == "drop":
                dropped += 1
                continue
            truncated += 1
            ex = {k: v[: cfg.max_length] for k, v in ex.items()}
            if all(t == IGNORE_INDEX for t in ex["labels"]):
                dropped += 1
                continue
        rows["input_ids"].append(ex["input_ids"])
        rows["labels"].append(ex["labels"])
    if not rows["input_ids"]:
        raise ValueError(f"max_length: all {dropped} conversations are longer than {cfg.max_length} tokens")
    text = replay_documents(cfg, tokenizer, sum(map(len, rows["input_ids"])))
    stats = {
        "conversations": len(rows["input_ids"]),
        "dropped_too_long": dropped,
        "truncated": truncated,
        "tokens": sum(map(len, rows["input_ids"])),
        "loss_tokens": sum(sum(t != IGNORE_INDEX for t in lab) for lab in rows["labels"]),
        "text_documents": len(text),
        "text_tokens": sum(map(len, text)),
    }
    rows["input_ids"] += text
    rows["labels"] += [list(d) for d in text]
    return Dataset.from_dict(rows), stats


def replay_documents(cfg: SteinerSFTConfig, tokenizer: PreTrainedTokenizerBase, sft_tokens: int) -> list[list[int]]:
    """Tokenized ``text_files`` documents (each ending in eos, cut to max_length), sampled so they make
    up ``text_ratio`` of the tokens next to ``sft_tokens`` conversation tokens."""
    import random

    from steiner.train.cpt import read_text_files, take_documents

    if cfg.text_ratio <= 0:
        return []
    docs = read_text_files(cfg.text_files)
    ids = [d[: cfg.max_length - 1] + [tokenizer.eos_token_id]
           for d in tokenizer(docs, add_special_tokens=False)["input_ids"]] if docs else []
    return take_documents(ids, sft_tokens * cfg.text_ratio / (1 - cfg.text_ratio), random.Random(cfg.seed))


def pack(ds: Any, max_length: int, seed: int) -> Any:
    """Best-fit-decreasing packing into rows of <= ``max_length`` tokens with a ``seq_lengths`` column."""
    from trl import pack_dataset

    return pack_dataset(ds.shuffle(seed=seed), max_length, strategy="bfd")


class SFTCollator:
    """Stack rows into a batch, padding to the longest row (pad id, label -100).

    Packed rows (with ``seq_lengths``) get position ids that restart at every conversation and no
    attention mask, so the model masks attention per conversation; the padding tail is a segment
    of its own. Unpacked rows get an ordinary attention mask.
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        packed = "seq_lengths" in rows[0]
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
            if packed:
                lengths = [*r["seq_lengths"], width - n] if width > n else list(r["seq_lengths"])
                pos[i] = torch.cat([torch.arange(k) for k in lengths])
        if packed:
            return {"input_ids": ids, "labels": labels, "position_ids": pos}
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def main(cfg: SteinerSFTConfig) -> Path:
    """Run SFT; return the output folder (a save_pretrained model with tokenizer and chat template)."""
    from rich.console import Console
    from transformers import Trainer, TrainingArguments

    model, tok = load_model_and_tokenizer(cfg)
    ds, stats = build_dataset(cfg, tok)
    if cfg.packing:
        ds = pack(ds, cfg.max_length, cfg.seed)
    stats["rows"] = len(ds)
    args = TrainingArguments(**trainer_kwargs(cfg))
    if args.process_index == 0:
        Console(stderr=True).print(
            f"[bold]SFT[/] {stats['conversations']} conversations, {stats['tokens']} tokens "
            f"({stats['loss_tokens']} with loss) + {stats['text_tokens']} replayed text tokens in {stats['rows']} "
            f"rows; dropped {stats['dropped_too_long']} too long; packing {'on' if cfg.packing else 'off'}"
        )
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=SFTCollator(tok.pad_token_id))
    summary = run_trainer(trainer, cfg)
    return finish(trainer, tok, cfg, {**summary, "data": stats}, "sft")
