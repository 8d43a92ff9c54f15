"""Stage 2, supervised fine-tuning: reasoning paths as chat turns, loss on the assistant part only.

Each paths.jsonl record becomes ``[user: question, assistant: {content: final_answer, steps}]``,
rendered by the tokenizer's chat template. The template's ``{% generation %}`` markers give the
assistant-token mask; prompt tokens get label -100. We tokenize and label ourselves (the steps are
nested dicts that Arrow tables handle poorly) and hand TRL's `SFTTrainer` ready ``input_ids`` and
``labels``, so packing is TRL's best-fit-decreasing packing with padding-free batches: no pad token
is ever computed, and position ids restart at each conversation so attention stays inside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steiner.config import ConfigError, opt
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

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.paths_files:
            raise ConfigError("paths_files: give at least one paths.jsonl file")
        if self.too_long not in ("drop", "truncate"):
            raise ConfigError(f"too_long: must be 'drop' or 'truncate', got {self.too_long!r}")


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
    return {"input_ids": ids, "labels": [t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=True)]}


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
    stats = {
        "conversations": len(rows["input_ids"]),
        "dropped_too_long": dropped,
        "truncated": truncated,
        "tokens": sum(map(len, rows["input_ids"])),
        "loss_tokens": sum(sum(t != IGNORE_INDEX for t in lab) for lab in rows["labels"]),
    }
    return Dataset.from_dict(rows), stats


def sft_arguments(cfg: SteinerSFTConfig, **overrides: Any) -> Any:
    """TRL `SFTConfig` for ``cfg``: packing (best-fit decreasing, padding-free) when ``cfg.packing``."""
    from trl import SFTConfig

    kw = trainer_kwargs(cfg)
    kw.update(
        max_length=cfg.max_length,
        packing=cfg.packing,
        packing_strategy="bfd",
        dataset_num_proc=None,
    )
    kw.update(overrides)
    return SFTConfig(**kw)


def main(cfg: SteinerSFTConfig) -> Path:
    """Run SFT; return the output folder (a save_pretrained model with tokenizer and chat template)."""
    from rich.console import Console
    from trl import SFTTrainer

    model, tok = load_model_and_tokenizer(cfg)
    ds, stats = build_dataset(cfg, tok)
    args = sft_arguments(cfg)
    if args.process_index == 0:
        Console(stderr=True).print(
            f"[bold]SFT[/] {stats['conversations']} conversations, {stats['tokens']} tokens "
            f"({stats['loss_tokens']} with loss); dropped {stats['dropped_too_long']} too long, "
            f"packing {'on' if cfg.packing else 'off'}"
        )
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    summary = run_trainer(trainer, cfg)
    return finish(trainer, tok, cfg, {**summary, "data": stats}, "sft")
