"""Stage three: RL with step-level rewards from the question's DAG (process-supervised GRPO), on TRL.

Each RL step, every process samples ``num_generations`` (G) completions for each of its
``questions_per_step`` questions with the format processor on, parses them, grades them, matches their
steps to the question's DAG and scores them (`steiner.train.rewards`). Mode ``step`` turns the step
rewards into (B, T) token advantages (`steiner.train.advantages`); mode ``outcome`` is plain GRPO on
the outcome reward. The update is TRL's GRPOTrainer (`steiner.train.grpo.SteinerGRPOTrainer`): clipped
ratio, KL to the reference model, its loss types, vLLM generation, DeepSpeed/FSDP through accelerate.

Options: ours below (`RLConfig`, with the shared training options and the reward weights), and every
other GRPOConfig option by its TRL name under ``trl`` (TRL documents those). One RL step is one round of
sampling followed by ``ppo_epochs`` passes of minibatch updates of ``per_device_batch_size``
completions; ``max_steps``, ``save_steps`` and ``logging_steps`` count RL steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from steiner.config import ConfigError, check_range, opt
from steiner.train.advantages import CREDITS
from steiner.train.common import TrainConfig
from steiner.train.rewards import Dag, StepRewardConfig, load_dags

# GRPOConfig options that one of our fields sets (so each option has one name); trainer_kwargs sets the rest
OWNED = {"beta": "kl_coef", "epsilon": "clip_eps", "num_iterations": "ppo_epochs",
         "max_completion_length": "max_new_tokens", "temperature": "temperature", "top_p": "top_p",
         "num_generations": "num_generations", "steps_per_generation": "questions_per_step",
         "generation_batch_size": "questions_per_step", "per_device_train_batch_size": "per_device_batch_size",
         "learning_rate": "learning_rate", "output_dir": "output_dir", "seed": "seed", "max_steps": "max_steps",
         "num_train_epochs": "num_epochs", "gradient_accumulation_steps": "gradient_accumulation_steps",
         "save_steps": "save_steps", "logging_steps": "logging_steps", "use_cpu": "use_cpu", "bf16": "bf16",
         "lr_scheduler_type": "lr_scheduler", "warmup_steps": "warmup_ratio", "warmup_ratio": "warmup_ratio",
         "weight_decay": "weight_decay", "max_grad_norm": "max_grad_norm", "save_total_limit": "save_total_limit",
         "report_to": "report_to", "gradient_checkpointing": "gradient_checkpointing",
         "activation_checkpointing": "gradient_checkpointing", "dataloader_num_workers": "dataloader_workers"}


@dataclass
class RLConfig(StepRewardConfig, TrainConfig):
    """RL options; the shared training options and the reward weights (`StepRewardConfig`) included.

    ``per_device_batch_size`` completions go through each forward/backward pass; it must divide
    ``questions_per_step x num_generations``. Any other GRPOConfig option goes under ``trl``.
    """

    output_dir: str = opt("runs/rl", "where checkpoints and the final model folder go")
    logging_steps: int = opt(1, "RL steps between metric lines (metrics.jsonl and the console)")
    questions: str | None = opt(None, "question records JSONL (id, question, answer, ...); none = the DAGs' questions")
    dags: str | None = opt(None, "dags.jsonl written by `steiner synth` (needed by mode: step), joined by question id")
    mode: Literal["step", "outcome"] = opt("step", "step: DAG step rewards + outcome; outcome: plain GRPO")
    num_generations: int = opt(8, "G: completions sampled per question (the group rewards are compared within)")
    questions_per_step: int = opt(2, "questions each process samples per RL step")
    max_new_tokens: int = opt(256, "longest completion sampled")
    temperature: float = opt(1.0, "sampling temperature (log-probs are computed at this temperature too)")
    top_p: float = opt(1.0, "nucleus sampling mass")
    min_reasoning_steps: int = opt(0, "format processor: fewest reasoning steps before the model may end")
    max_reasoning_steps: int | None = opt(None, "format processor: most reasoning steps (none = unbounded)")
    max_reasoning_tokens: int | None = opt(None, "format processor: token budget of the reasoning (none = no budget)")
    system_prompt: str | None = opt(None, "system message put before each question")
    clip_eps: float = opt(0.2, "PPO ratio clipping epsilon (TRL: epsilon)")
    ppo_epochs: int = opt(1, "passes of updates over each RL step's samples (TRL: num_iterations)")
    kl_coef: float = opt(0.04, "weight of the k3 KL penalty to the starting model; 0 = no reference (TRL: beta)")
    sequence_weight: float = opt(1.0, "step mode: weight of the group-centred outcome + path reward on every token")
    step_credit: Literal["to_go", "local"] = opt("to_go", "step mode: a step's credit on every token up to its end "
                                                  "(to_go) or only on its own tokens (local)")
    adv_std_floor: float = opt(0.1, "step mode: the std advantages are divided by is at least this (reward units)")
    trl: dict[str, Any] | str = opt({}, "any other GRPOConfig option by its TRL name, e.g. {loss_type: dr_grpo, "
                                        "use_vllm: true, vllm_mode: colocate}; on the command line as YAML "
                                        "'{loss_type: dr_grpo}' or loss_type=dr_grpo,use_vllm=true")

    def __post_init__(self) -> None:
        TrainConfig.__post_init__(self)
        StepRewardConfig.__post_init__(self)
        check_range("num_generations", self.num_generations, lo=2)
        check_range("clip_eps", self.clip_eps, lo=0, lo_open=True)
        check_range("kl_coef", self.kl_coef, lo=0)
        for name in ("questions_per_step", "max_new_tokens", "ppo_epochs"):
            check_range(name, getattr(self, name), lo=1)
        check_range("temperature", self.temperature, lo=0, lo_open=True)
        check_range("top_p", self.top_p, lo=0, hi=1, lo_open=True)
        check_range("min_reasoning_steps", self.min_reasoning_steps, lo=0)
        check_range("max_reasoning_steps", self.max_reasoning_steps, lo=max(1, self.min_reasoning_steps))
        check_range("max_reasoning_tokens", self.max_reasoning_tokens, lo=12)
        check_range("sequence_weight", self.sequence_weight, lo=0)
        check_range("adv_std_floor", self.adv_std_floor, lo=0)
        if self.step_credit not in CREDITS:
            raise ConfigError(f"step_credit must be 'to_go' or 'local', got {self.step_credit!r}")
        if self.mode == "step" and not self.dags:
            raise ConfigError("dags: mode 'step' needs the DAGs that `steiner synth` writes to dags.jsonl "
                              "(set dags: PATH/dags.jsonl, or use mode: outcome)")
        if not self.questions and not self.dags:
            raise ConfigError("questions: give a question records JSONL (or dags, whose questions are used)")
        rows = self.questions_per_step * self.num_generations
        if rows % self.per_device_batch_size:
            raise ConfigError(f"per_device_batch_size ({self.per_device_batch_size}) must divide questions_per_step "
                              f"x num_generations ({rows}): each RL step's completions split into equal minibatches")
        if (rows // self.per_device_batch_size * self.ppo_epochs) % self.gradient_accumulation_steps:
            raise ConfigError(f"gradient_accumulation_steps ({self.gradient_accumulation_steps}) must divide the "
                              f"minibatches per RL step ({rows // self.per_device_batch_size} x ppo_epochs "
                              f"{self.ppo_epochs})")
        self.trl = parse_trl_options(self.trl)
        clash = sorted(k for k in self.trl if k in OWNED)
        if clash:
            raise ConfigError("trl: " + ", ".join(f"{k!r} is set by {OWNED[k]!r}" for k in clash))
        if self.mode == "step" and self.trl.get("scale_rewards", "group") not in ("group", "none", True, False):
            raise ConfigError("trl: scale_rewards in mode 'step' is 'group' or 'none' (step credits are per group)")

    @property
    def updates_per_step(self) -> int:
        """Optimizer steps per RL step (TRL counts those as global_step)."""
        mb = self.questions_per_step * self.num_generations // self.per_device_batch_size
        return mb * self.ppo_epochs // self.gradient_accumulation_steps

    def grpo_config(self) -> Any:
        """The TRL GRPOConfig of this run; TRL's own checks raise a ConfigError naming the option."""
        from trl import GRPOConfig

        from steiner.train.common import trainer_kwargs

        names = {f.name for f in dataclasses.fields(GRPOConfig)}
        unknown = sorted(set(self.trl) - names)
        if unknown:
            raise ConfigError(f"trl: unknown GRPOConfig option(s) {unknown} (TRL's names, see its GRPOConfig docs)")
        u = self.updates_per_step
        kw = trainer_kwargs(self)
        kw.update(
            max_steps=self.max_steps * u if self.max_steps > 0 else -1,
            save_steps=self.save_steps * u, logging_steps=self.logging_steps * u,
            num_generations=self.num_generations, max_completion_length=self.max_new_tokens,
            temperature=self.temperature, top_p=self.top_p, beta=self.kl_coef, epsilon=self.clip_eps,
            num_iterations=self.ppo_epochs,
            steps_per_generation=self.questions_per_step * self.num_generations // self.per_device_batch_size,
        )
        if kw.get("use_cpu"):  # a preallocated KV cache: a growing one re-copies itself every token on a CPU
            kw["cache_implementation"] = "static"
        kw.update(self.trl)
        try:
            return GRPOConfig(**kw)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"trl: {e}") from e


def parse_trl_options(value: dict[str, Any] | str | None) -> dict[str, Any]:
    """``trl`` as a mapping: a YAML mapping as is; a string as YAML ('{a: 1}') or ``a=1,b=x`` pairs."""
    import yaml

    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(value)
    text = str(value).strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            out = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"trl: not a YAML mapping: {e}") from e
        if not isinstance(out, dict):
            raise ConfigError(f"trl: expected a mapping, got {text!r}")
        return out
    out = {}
    for pair in text.split(","):
        if "=" not in pair:
            raise ConfigError(f"trl: expected key=value pairs separated by commas, got {pair!r}")
        k, v = pair.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


@dataclass
class RLItem:
    """One question to sample: its record and, in step mode, its DAG."""

    id: str
    record: dict
    dag: Dag | None


def load_items(cfg: RLConfig) -> tuple[list[RLItem], dict[str, int]]:
    """Questions joined with their DAGs by id, and counts of what was skipped.

    Step mode keeps only questions that have a DAG (``no_dag`` counts the rest); ``unmatched_dags``
    counts DAGs whose question id matches no question. No question left is an error naming both files.
    """
    from steiner.domain import read_questions

    dags = load_dags(cfg.dags) if cfg.dags else {}
    if cfg.questions:
        records = read_questions(cfg.questions)
    else:
        records = [{"id": d.question_id, "question": d.question, "answer": d.answer} for d in dags.values()]
    items, no_dag = [], 0
    for rec in records:
        dag = dags.get(str(rec["id"]))
        if cfg.mode == "step" and dag is None:
            no_dag += 1
            continue
        items.append(RLItem(str(rec["id"]), rec, dag))
    ids = {str(r["id"]) for r in records}
    skipped = {"no_dag": no_dag, "unmatched_dags": sum(q not in ids for q in dags)}
    if not items:
        raise ValueError(f"no question of {cfg.questions} has a DAG in {cfg.dags} (joined on id = question_id); "
                         "run `steiner synth` on these questions to write their dags.jsonl")
    return items, skipped


def conversation(item: RLItem, system_prompt: str | None) -> list[dict]:
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": str(item.record["question"])}]


def build_trainer(cfg: RLConfig, trainer_cls: type | None = None) -> tuple[Any, Any, dict[str, int]]:
    """(trainer, tokenizer, skipped counts) of a run, ready to ``train()``; ``trainer_cls`` defaults to
    `SteinerGRPOTrainer` (tests pass a subclass)."""
    from datasets import Dataset

    from steiner.train.common import load_model_and_tokenizer
    from steiner.train.grpo import MetricsFile, SteinerGRPOTrainer

    items, skipped = load_items(cfg)  # bad data fails before any model loads
    args = cfg.grpo_config()
    if len(items) < cfg.questions_per_step * args.world_size:
        raise ValueError(f"{len(items)} questions, but one RL step samples questions_per_step "
                         f"({cfg.questions_per_step}) x {args.world_size} processes distinct questions; "
                         "lower questions_per_step or add questions")
    model, tok = load_model_and_tokenizer(dataclasses.replace(cfg, lora=False))
    peft = None
    if cfg.lora:
        from peft import LoraConfig

        # adapters only: the reasoning tokens' rows were learned in SFT; the reference is the adapter-off model
        peft = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=list(cfg.lora_target_modules), task_type="CAUSAL_LM")
    ds = Dataset.from_list([{"prompt": conversation(it, cfg.system_prompt), "qid": it.id} for it in items])
    trainer = (trainer_cls or SteinerGRPOTrainer)(
        model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft, steiner=cfg,
        items={it.id: it for it in items}, callbacks=[MetricsFile(Path(cfg.output_dir), cfg.updates_per_step)])
    return trainer, tok, skipped


def main(cfg: RLConfig) -> Path:
    """Run RL and write a ``save_pretrained`` folder (model, tokenizer, chat template) to ``output_dir``;
    ``metrics.jsonl`` there logs a line per ``logging_steps`` RL steps, ``steiner_train.json`` the run."""
    from rich.console import Console

    from steiner.train.common import finish, run_trainer

    trainer, tok, skipped = build_trainer(cfg)
    if trainer.is_world_process_zero() and any(skipped.values()):
        Console(stderr=True).print(f"[yellow]RL skips[/] {skipped['no_dag']} questions without a DAG; "
                                   f"{skipped['unmatched_dags']} DAGs match no question")
    summary = run_trainer(trainer, cfg)
    summary["rl_steps"] = summary["global_step"] // cfg.updates_per_step
    summary["updates_per_step"] = cfg.updates_per_step
    summary["skipped"] = skipped
    return finish(trainer, tok, cfg, summary, "rl")
