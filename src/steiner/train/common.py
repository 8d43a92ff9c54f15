"""What every training stage shares: the base config, model loading (full or LoRA), Trainer arguments,
checkpoint resume, the final save, and reading ``paths.jsonl``.

CPT, SFT and RL each subclass `TrainConfig` and call these helpers, so a flag means the same thing in
every stage and a model folder always comes out the same way: a ``save_pretrained`` folder with the
tokenizer and the chat template, LoRA merged unless ``merge_lora`` is off.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from steiner.config import ConfigError, check_range, opt, to_dict

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from steiner.format import ReasoningPath

DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SUMMARY_FILE = "steiner_train.json"


@dataclass
class TrainConfig:
    """Options shared by every training stage (CPT, SFT, RL)."""

    model: str = opt("", "save_pretrained folder of the model and tokenizer to start from")
    output_dir: str = opt("runs/train", "where checkpoints and the final model folder go")
    seed: int = opt(0, "random seed (data order, sampling, LoRA init)")
    learning_rate: float = opt(1e-4, "peak learning rate")
    lr_scheduler: str = opt("cosine", "transformers scheduler name: cosine, linear, constant, ...")
    warmup_ratio: float = opt(0.0, "fraction of the steps spent warming the learning rate up")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    max_grad_norm: float = opt(1.0, "gradient clipping norm")
    num_epochs: float = opt(1.0, "passes over the data (ignored when max_steps > 0)")
    max_steps: int = opt(-1, "optimizer steps to run; -1 = run num_epochs")
    per_device_batch_size: int = opt(8, "sequences per device per forward pass")
    gradient_accumulation_steps: int = opt(1, "forward passes per optimizer step")
    max_length: int = opt(1024, "tokens per training sequence (CPT block size, SFT max/pack length)")
    save_steps: int = opt(500, "write a checkpoint-N folder every this many steps")
    save_total_limit: int | None = opt(2, "keep at most this many checkpoints (none = all)")
    logging_steps: int = opt(10, "print and log the loss every this many steps")
    resume: bool = opt(True, "continue from the latest checkpoint-N in output_dir when there is one")
    report_to: Literal["none", "tensorboard", "wandb"] = opt("none", "where metrics go besides the console")
    lora: bool = opt(False, "train LoRA adapters (peft) instead of all weights; embeddings and lm_head still train")
    lora_r: int = opt(16, "LoRA rank")
    lora_alpha: int = opt(32, "LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = opt(0.05, "dropout on the LoRA branch")
    lora_target_modules: list[str] = opt(DEFAULT_LORA_TARGETS, "module names that get LoRA adapters")
    merge_lora: bool = opt(True, "merge the LoRA weights into the base model when saving the final folder")
    gradient_checkpointing: bool = opt(False, "recompute activations in the backward pass (less memory)")
    torch_compile: bool = opt(False, "compile the model with torch.compile (on 2 CPU cores the demo's SFT trained "
                                     "24% faster per step, its CPT no faster: docs/demo.md; on a CPU it needs a C++ "
                                     "compiler, else trains eagerly)")
    use_cpu: bool | None = opt(None, "train on the CPU; none = only when no CUDA device is present")
    bf16: bool | None = opt(None, "bfloat16 mixed precision; none = when the GPU supports it")
    dataloader_workers: int = opt(0, "DataLoader worker processes")
    write_rank_checksums: bool = opt(False, "each process writes rank_<i>.json (world size, weight checksum)")

    def __post_init__(self) -> None:
        check_range("learning_rate", self.learning_rate, lo=0, lo_open=True)
        check_range("warmup_ratio", self.warmup_ratio, lo=0, hi=0.99)
        check_range("weight_decay", self.weight_decay, lo=0)
        check_range("max_grad_norm", self.max_grad_norm, lo=0)
        check_range("num_epochs", self.num_epochs, lo=0, lo_open=True)
        if self.max_steps != -1:
            check_range("max_steps", self.max_steps, lo=1)
        for name in ("per_device_batch_size", "gradient_accumulation_steps", "max_length", "save_steps",
                     "logging_steps", "lora_r", "lora_alpha"):
            check_range(name, getattr(self, name), lo=1)
        check_range("save_total_limit", self.save_total_limit, lo=1)
        check_range("lora_dropout", self.lora_dropout, lo=0, hi=1)
        check_range("dataloader_workers", self.dataloader_workers, lo=0)
        if self.lora and not self.lora_target_modules:
            raise ConfigError("lora_target_modules: give at least one module name when lora is on")

    def resolved_use_cpu(self) -> bool:
        if self.use_cpu is not None:
            return self.use_cpu
        import torch

        return not torch.cuda.is_available()

    def resolved_bf16(self) -> bool:
        if self.bf16 is not None:
            return self.bf16
        import torch

        return not self.resolved_use_cpu() and torch.cuda.is_available() and torch.cuda.is_bf16_supported()

    def resolved_torch_compile(self) -> bool:
        if not self.torch_compile or not self.resolved_use_cpu():
            return self.torch_compile
        import shutil

        if any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
            return True
        import warnings

        warnings.warn("torch_compile: no C++ compiler found (torch.compile on a CPU needs one); training eagerly",
                      stacklevel=2)
        return False


def require_model(cfg: TrainConfig) -> Path:
    if not cfg.model:
        raise ConfigError("model: required (a save_pretrained folder holding a model and its tokenizer)")
    return Path(cfg.model)


def load_model_and_tokenizer(cfg: TrainConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``cfg.model``; add the reasoning tokens (and rows) if missing; wrap in LoRA when ``cfg.lora``."""
    import torch

    from steiner.tokenizer import ReasoningTokenIds, extend, extend_model, load_model, load_tokenizer

    path = require_model(cfg)
    tok = load_tokenizer(path)
    # full fine-tuning keeps fp32 master weights (bf16 runs as autocast); a frozen LoRA base can be bf16
    dtype = torch.bfloat16 if cfg.lora and cfg.resolved_bf16() else torch.float32
    model = load_model(path, dtype=dtype)
    try:
        ReasoningTokenIds.from_tokenizer(tok)
    except ValueError:
        extend(tok, model)  # a plain base model: add the 14 tokens and initialise their rows
    if model.get_input_embeddings().weight.shape[0] < len(tok):
        extend_model(model, tok)
    if not getattr(tok, "chat_template", None):
        from steiner.tokenizer import chat_template

        tok.chat_template = chat_template()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if cfg.gradient_checkpointing:
        model.config.use_cache = False
    if cfg.lora:
        model = wrap_lora(model, cfg)
    return model, tok


def wrap_lora(model: PreTrainedModel, cfg: TrainConfig) -> PreTrainedModel:
    """LoRA adapters on ``lora_target_modules``; embeddings and lm_head train in full so the new rows learn."""
    from peft import LoraConfig, get_peft_model

    save = ["embed_tokens", "lm_head"]
    if getattr(model.config, "tie_word_embeddings", False):
        save = ["embed_tokens"]  # a tied lm_head follows the embedding
    lcfg = LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_target_modules), modules_to_save=save, task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lcfg)


def trainer_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """Keyword arguments for `transformers.TrainingArguments` (and TRL configs, which extend it)."""
    kw: dict[str, Any] = dict(
        output_dir=cfg.output_dir,
        seed=cfg.seed,
        data_seed=cfg.seed,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=float(cfg.warmup_ratio),  # a float below 1 is a fraction of the steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to],
        use_cpu=cfg.resolved_use_cpu(),
        bf16=cfg.resolved_bf16(),
        dataloader_num_workers=cfg.dataloader_workers,
        ddp_find_unused_parameters=False,
        remove_unused_columns=False,
        torch_compile=cfg.resolved_torch_compile(),
    )
    # transformers 5 renamed gradient_checkpointing (the old name still works, with a warning)
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    key = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    kw[key] = cfg.gradient_checkpointing
    return kw


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint-N folder with the largest N that holds a trainer_state.json, or None."""
    best: tuple[int, Path] | None = None
    root = Path(output_dir)
    if not root.is_dir():
        return None
    for p in root.iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and p.is_dir() and (p / "trainer_state.json").exists():
            if best is None or int(m.group(1)) > best[0]:
                best = (int(m.group(1)), p)
    return best[1] if best else None


def run_trainer(trainer: Any, cfg: TrainConfig) -> dict[str, Any]:
    """Train, resuming from the latest checkpoint when ``cfg.resume``; return a summary of the run."""
    from rich.console import Console

    ckpt = last_checkpoint(cfg.output_dir) if cfg.resume else None
    if ckpt is not None and trainer.is_world_process_zero():
        Console(stderr=True).print(f"[bold]resuming[/] from {ckpt}")
    result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    return {
        "global_step": trainer.state.global_step,
        "train_loss": result.training_loss,
        "resumed_from": str(ckpt) if ckpt else None,
        "world_size": trainer.args.world_size,
        "metrics": result.metrics,
    }


def weights_checksum(model: Any) -> str:
    """SHA-256 over every parameter, in name order: equal on all ranks iff data-parallel stayed in sync."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def finish(trainer: Any, tokenizer: PreTrainedTokenizerBase, cfg: TrainConfig, summary: dict[str, Any],
           stage: str) -> Path:
    """Write the final model folder (LoRA merged unless ``merge_lora`` is off) and a run summary.

    Every process takes part (a sharded model needs all ranks to gather its weights); only the main
    process writes files, except ``rank_<i>.json`` when ``write_rank_checksums``.
    """
    out = Path(cfg.output_dir)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if cfg.write_rank_checksums:
        rank = trainer.args.process_index
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank_{rank}.json").write_text(json.dumps({
            "rank": rank, "world_size": trainer.args.world_size,
            "env_world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "global_step": trainer.state.global_step, "checksum": weights_checksum(model),
        }))
    model.config.use_cache = True  # the Trainer turned it off for training; generation wants it
    trainer.accelerator.wait_for_everyone()
    merge = cfg.lora and cfg.merge_lora
    # Trainer.save_model gathers sharded weights (ZeRO-3, FSDP); every rank must call it
    trainer.save_model(str(out / "adapter" if merge else out))
    if not trainer.is_world_process_zero():
        return out
    if merge:
        merge_adapter(cfg, out / "adapter", out)
    tokenizer.save_pretrained(out)
    summary = {"stage": stage, **summary, "config": to_dict(cfg)}
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
    return out


def merge_adapter(cfg: TrainConfig, adapter: Path, out: Path) -> None:
    """Load the base model as training did, apply the saved LoRA adapter, merge and save to ``out``.

    Reloading instead of merging in place works the same whether or not the trained weights were sharded.
    """
    import dataclasses

    from peft import PeftModel

    base, _ = load_model_and_tokenizer(dataclasses.replace(cfg, lora=False, gradient_checkpointing=False))
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.config.use_cache = True
    merged.save_pretrained(out)


# ---- paths.jsonl ---------------------------------------------------------------------------------


def read_paths(files: list[str] | str) -> list[tuple[dict[str, Any], ReasoningPath]]:
    """Read paths.jsonl records with their `ReasoningPath`; errors name the file, line and field."""
    from steiner.format import FormatError, ReasoningPath, step_from_dict, validate
    from steiner.jsonl import iter_records

    out = []
    for f in [files] if isinstance(files, str) else files:
        for where, rec in iter_records(f, "paths"):
            for key in ("question", "steps", "final_answer"):
                if key not in rec:
                    raise ValueError(f"{where}: record has no {key!r} field")
            if rec["final_answer"] is None:
                raise ValueError(f"{where}: 'final_answer' is null; training paths must reach an answer")
            if not isinstance(rec["steps"], list):
                raise ValueError(f"{where}: 'steps' must be a list of step dicts")
            try:
                steps = [step_from_dict(s) for s in rec["steps"]]
                path = ReasoningPath(steps, str(rec["final_answer"]))
                validate(path)
            except (FormatError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{where}: bad reasoning path: {e}") from e
            out.append((rec, path))
    if not out:
        raise ValueError(f"no reasoning paths in {files}")
    return out


def path_messages(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat conversation of one paths.jsonl record (user question, assistant steps + answer).

    An optional ``history`` (earlier turns, each ``{question, steps, final_answer}``) comes first; the
    chat template collapses those turns' reasoning to step summaries, as in a real multi-turn chat. An
    optional ``system`` (e.g. a step budget, `steiner.format.min_steps_prompt`) is the first message.
    """
    messages: list[dict[str, Any]] = [{"role": "system", "content": str(record["system"])}] if record.get("system") else []
    for turn in [*record.get("history", []), record]:
        steps = [{k: v for k, v in s.items() if k != "meta"} for s in turn["steps"]]
        messages += [
            {"role": "user", "content": turn["question"]},
            {"role": "assistant", "content": str(turn["final_answer"]), "steps": steps},
        ]
    return messages
