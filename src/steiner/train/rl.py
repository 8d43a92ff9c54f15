"""Stage three: RL with step-level rewards from the question's DAG (process-supervised GRPO).

Each RL step, every process samples G completions for its own questions with the current policy
(`steiner.infer.generate`, format processor on), parses them, matches steps to DAG nodes, scores them
(`steiner.train.rewards`), turns rewards into token advantages (`steiner.train.advantages`) and updates
with a clipped policy-gradient loss plus a k3 KL penalty to the frozen starting model:

    loss_t = -min(rho_t A_t, clip(rho_t, 1 - clip_eps, 1 + clip_eps) A_t) + kl_coef * k3_t
    k3_t = exp(ref_t - logp_t) - (ref_t - logp_t) - 1,    rho_t = exp(logp_t - logp_old_t)

averaged over each completion's tokens, then over completions. ``mode: outcome`` is plain GRPO on the
outcome reward, for comparison. Runs under ``accelerate launch`` (gradients all-reduced by DDP).
"""

from __future__ import annotations

import copy
import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from steiner.config import ConfigError, check_range, opt, to_dict
from steiner.train.common import SUMMARY_FILE, TrainConfig, last_checkpoint, weights_checksum
from steiner.train.rewards import Dag, KeyFn, StepRewardConfig, load_dags, make_checker

METRICS_FILE = "metrics.jsonl"


@dataclass
class RLConfig(StepRewardConfig, TrainConfig):
    """RL options; the shared training options and the reward weights (`StepRewardConfig`) included.

    ``per_device_batch_size`` is the number of completions per forward/backward pass and
    ``gradient_accumulation_steps`` the passes per optimizer step; ``max_steps`` counts RL steps.
    """

    questions: str | None = opt(None, "question records JSONL (id, question, answer, ...); none = the DAGs' questions")
    dags: str | None = opt(None, "dags.jsonl written by `steiner synth` (needed by mode: step), joined by question id")
    mode: Literal["step", "outcome"] = opt("step", "step: DAG step rewards + outcome; outcome: plain GRPO")
    num_generations: int = opt(8, "G: completions sampled per question (the group rewards are normalised over)")
    questions_per_step: int = opt(2, "questions each process samples per RL step")
    max_new_tokens: int = opt(256, "longest completion sampled")
    temperature: float = opt(1.0, "sampling temperature")
    top_p: float = opt(1.0, "nucleus sampling mass")
    min_reasoning_steps: int = opt(0, "format processor: fewest reasoning steps before the model may end")
    max_reasoning_steps: int | None = opt(None, "format processor: most reasoning steps (none = unbounded)")
    max_reasoning_tokens: int | None = opt(None, "format processor: token budget of the reasoning (none = no budget)")
    generation_batch_size: int = opt(16, "rows generated at once")
    system_prompt: str | None = opt(None, "system message put before each question")
    clip_eps: float = opt(0.2, "PPO ratio clipping epsilon")
    ppo_epochs: int = opt(1, "passes of updates over each step's samples")
    kl_coef: float = opt(0.04, "weight of the k3 KL penalty to the reference (starting) model; 0 = no reference")
    sequence_weight: float = opt(1.0, "step mode: weight of the group-normalised outcome + path reward on every token")
    adv_eps: float = opt(1e-4, "epsilon added to the std when normalising rewards")

    def __post_init__(self) -> None:
        TrainConfig.__post_init__(self)
        StepRewardConfig.__post_init__(self)
        check_range("num_generations", self.num_generations, lo=2)
        check_range("clip_eps", self.clip_eps, lo=0, lo_open=True)
        check_range("kl_coef", self.kl_coef, lo=0)
        for name in ("questions_per_step", "max_new_tokens", "ppo_epochs", "generation_batch_size"):
            check_range(name, getattr(self, name), lo=1)
        check_range("temperature", self.temperature, lo=0, lo_open=True)
        check_range("top_p", self.top_p, lo=0, hi=1, lo_open=True)
        check_range("min_reasoning_steps", self.min_reasoning_steps, lo=0)
        check_range("max_reasoning_steps", self.max_reasoning_steps, lo=max(1, self.min_reasoning_steps))
        check_range("max_reasoning_tokens", self.max_reasoning_tokens, lo=12)
        check_range("sequence_weight", self.sequence_weight, lo=0)
        check_range("adv_eps", self.adv_eps, lo=0, lo_open=True)
        if self.mode == "step" and not self.dags:
            raise ConfigError("dags: mode 'step' needs the DAGs that `steiner synth` writes to dags.jsonl "
                              "(set dags: PATH/dags.jsonl, or use mode: outcome)")
        if not self.questions and not self.dags:
            raise ConfigError("questions: give a question records JSONL (or dags, whose questions are used)")


@dataclass
class RLItem:
    """One question to sample: its record, DAG (step mode), answer checker and step key function."""

    id: str
    record: dict
    dag: Dag | None
    check: Callable[[str], bool]
    key_fn: KeyFn | None


def read_questions(path: str | Path) -> list[dict]:
    """Question records ``{"id", "question", "answer", ...}``; errors name the file, line and field."""
    from steiner.jsonl import iter_records

    p = Path(path)
    out = []
    for where, rec in iter_records(p, "questions"):
        for k in ("id", "question", "answer"):
            if k not in rec:
                raise ValueError(f"{where}: question record has no {k!r} field")
        out.append(rec)
    if not out:
        raise ValueError(f"{p}: no question records")
    return out


def load_items(cfg: RLConfig) -> list[RLItem]:
    """Questions joined with their DAGs by id; in step mode only questions that have a DAG are kept."""
    dags = load_dags(cfg.dags) if cfg.dags else {}
    if cfg.questions:
        records = read_questions(cfg.questions)
    else:
        records = [{"id": d.question_id, "question": d.question, "answer": d.answer} for d in dags.values()]
    items = []
    for rec in records:
        dag = dags.get(str(rec["id"]))
        if cfg.mode == "step" and dag is None:
            continue
        items.append(RLItem(str(rec["id"]), rec, dag, make_checker(rec), _key_fn(rec)))
    if not items:
        raise ValueError(f"no question of {cfg.questions} has a DAG in {cfg.dags} (joined on id = question_id); "
                         "run `steiner synth` on these questions to write their dags.jsonl")
    return items


def _key_fn(rec: dict) -> KeyFn | None:
    from steiner.train.rewards import domain_key_fn

    return domain_key_fn(rec)


def conversation(item: RLItem, system_prompt: str | None) -> list[dict]:
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": str(item.record["question"])}]


def token_logprobs(model: Any, input_ids: Any, attention_mask: Any) -> Any:
    """log p(token t | tokens < t) for t = 1..L-1, shape (B, L-1)."""
    import torch

    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    target = input_ids[:, 1:].unsqueeze(-1)
    return torch.gather(logits, -1, target).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def policy_loss(logp: Any, old_logp: Any, ref_logp: Any | None, adv: Any, mask: Any, *, clip_eps: float,
                kl_coef: float) -> tuple[Any, Any, Any]:
    """Per-sequence clipped policy-gradient loss + k3 KL (token means), per-sequence KL, clipped fraction."""
    import torch

    ratio = torch.exp(logp - old_logp)
    pg = -torch.min(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    if ref_logp is not None:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1
    else:
        kl = torch.zeros_like(logp)
    n = mask.sum(1).clamp(min=1)
    per_seq = ((pg + kl_coef * kl) * mask).sum(1) / n
    clipped = (((ratio - 1).abs() > clip_eps).float() * mask).sum() / mask.sum().clamp(min=1)
    return per_seq, (kl * mask).sum(1) / n, clipped


def _batches(seqs: list[dict], pad_id: int, device: Any) -> dict[str, Any]:
    """Right-padded tensors of a list of {prompt, completion, adv} samples, aligned with log-probs."""
    import torch

    width = max(len(s["prompt"]) + len(s["completion"]) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros((len(seqs), width - 1))
    adv = torch.zeros((len(seqs), width - 1))
    for i, s in enumerate(seqs):
        p, c = len(s["prompt"]), len(s["completion"])
        ids[i, : p + c] = torch.tensor(s["prompt"] + s["completion"])
        att[i, : p + c] = 1
        mask[i, p - 1 : p + c - 1] = 1  # log-prob at t-1 predicts token t
        adv[i, p - 1 : p + c - 1] = s["adv"]
    return {"input_ids": ids.to(device), "attention_mask": att.to(device), "mask": mask.to(device),
            "adv": adv.to(device)}


def _shard_order(n: int, rank: int, world: int, seed: int, step: int, per_step: int) -> list[int]:
    """Indices of this rank's questions for an RL step: a seeded shuffle per epoch of its shard."""
    shard = list(range(rank, n, world))
    out = []
    for k in range(step * per_step, (step + 1) * per_step):
        epoch, pos = divmod(k, len(shard))
        order = shard[:]
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        out.append(order[pos])
    return out


def main(cfg: RLConfig) -> Path:
    """Run RL and write a ``save_pretrained`` folder (model, tokenizer, chat template) to ``output_dir``;
    ``metrics.jsonl`` there logs one line per RL step."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    from steiner.infer.generation import generate, render_prompts
    from steiner.tokenizer import ReasoningTokenIds
    from steiner.train.advantages import outcome_advantages, process_advantages
    from steiner.train.common import load_model_and_tokenizer
    from steiner.train.rewards import StepMatcher, score

    items = load_items(cfg)  # bad data fails before any model loads
    acc = Accelerator(cpu=cfg.resolved_use_cpu(), mixed_precision="bf16" if cfg.resolved_bf16() else "no")
    rank, world = acc.process_index, acc.num_processes
    if len(items) < world:
        raise ValueError(f"{len(items)} questions for {world} processes; each process needs at least one")
    set_seed(cfg.seed)
    model, tok = load_model_and_tokenizer(cfg)
    tids = ReasoningTokenIds.from_tokenizer(tok)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ref = None
    if cfg.kl_coef > 0 and not cfg.lora:
        ref = copy.deepcopy(model).eval().requires_grad_(False).to(acc.device)
    shard_size = math.ceil(len(items) / world)  # the same on every rank, so all ranks run the same steps
    total = cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(cfg.num_epochs * shard_size / cfg.questions_per_step))
    n_seq = cfg.questions_per_step * cfg.num_generations
    n_mb = math.ceil(n_seq / cfg.per_device_batch_size)
    updates_per_step = cfg.ppo_epochs * math.ceil(n_mb / cfg.gradient_accumulation_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = get_scheduler(cfg.lr_scheduler, optim, num_warmup_steps=int(cfg.warmup_ratio * total * updates_per_step),
                          num_training_steps=total * updates_per_step)
    model, optim = acc.prepare(model, optim)
    acc.register_for_checkpointing(sched)
    out = Path(cfg.output_dir)
    start = 0
    ckpt = last_checkpoint(out) if cfg.resume else None
    if ckpt is not None:
        acc.load_state(str(ckpt))
        start = json.loads((ckpt / "trainer_state.json").read_text())["global_step"]
        acc.print(f"resuming from {ckpt} (step {start})")
    matcher = StepMatcher(cfg) if cfg.mode == "step" else None
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(out / METRICS_FILE, start)
    progress, task = _progress(acc.is_main_process, total, start)
    writer = None
    if cfg.report_to == "tensorboard" and acc.is_main_process:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "runs"))
    elif cfg.report_to == "wandb":
        acc.print("report_to: wandb is not wired into RL; metrics go to metrics.jsonl (and tensorboard)")
    model.train()
    last: dict[str, Any] = {}
    sampled: set[str] = set()
    for step in range(start, total):
        t0 = time.perf_counter()
        batch = [items[i] for i in _shard_order(len(items), rank, world, cfg.seed, step, cfg.questions_per_step)]
        sampled.update(it.id for it in batch)
        convs = [conversation(it, cfg.system_prompt) for it in batch]
        gens = generate(acc.unwrap_model(model), tok, convs, n=cfg.num_generations, max_new_tokens=cfg.max_new_tokens,
                        temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed + 7919 * step + 104_729 * rank,
                        min_steps=cfg.min_reasoning_steps, max_steps=cfg.max_reasoning_steps, format_strict=True,
                        max_reasoning_tokens=cfg.max_reasoning_tokens, batch_size=cfg.generation_batch_size)
        t_gen = time.perf_counter()
        prompts = [tok(p, add_special_tokens=False)["input_ids"] for p in render_prompts(tok, convs)]
        seqs, stats = [], []
        for it, group, prompt in zip(batch, gens, prompts, strict=True):
            comps = [g.token_ids + ([tok.eos_token_id] if g.finish_reason == "stop" else []) for g in group]
            prs = []
            for g in group:
                correct = g.path.complete and it.check(g.answer)
                if cfg.mode == "step":
                    matches = matcher.match(g.path.steps, it.dag, key_fn=it.key_fn)
                    prs.append(score(g.path, correct=correct, cfg=cfg, dag=it.dag, matches=matches))
                else:
                    prs.append(score(g.path, correct=correct, cfg=cfg))
            if cfg.mode == "step":
                advs = process_advantages([p.steps for p in prs], comps, tids.step_end, [p.path + p.outcome for p in prs],
                                          sequence_weight=cfg.sequence_weight, eps=cfg.adv_eps)
            else:
                advs = outcome_advantages([p.outcome for p in prs], [len(c) for c in comps], eps=cfg.adv_eps)
            for g, c, a, p in zip(group, comps, advs, prs, strict=True):
                seqs.append({"prompt": prompt, "completion": c, "adv": a})
                stats.append([p.total if cfg.mode == "step" else p.outcome, float(p.correct), float(p.format_ok),
                              len(g.path.steps), g.path.num_backtracks, p.matched / max(1, len(g.path.steps)), len(c)])
        t_reward = time.perf_counter()
        loss_sum, kl_sum, clip_sum = _update(cfg, acc, model, ref, optim, sched, seqs, pad_id)
        t_update = time.perf_counter()
        local = torch.tensor([sum(col) for col in zip(*stats, strict=True)] + [loss_sum, kl_sum, clip_sum, len(stats)],
                             dtype=torch.float64, device=acc.device)
        tot = acc.reduce(local, reduction="sum").tolist()
        n = tot[-1]
        names = ["reward", "accuracy", "format_valid", "mean_steps", "backtracks", "matched", "completion_tokens"]
        last = {"step": step + 1, **{k: tot[i] / n for i, k in enumerate(names)},
                "loss": tot[7] / n, "kl": tot[8] / n, "clip_fraction": tot[9] / (world * updates_per_step),
                "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - t0, "generate_seconds": t_gen - t0,
                "reward_seconds": t_reward - t_gen, "update_seconds": t_update - t_reward}
        if acc.is_main_process:
            with (out / METRICS_FILE).open("a") as fh:
                fh.write(json.dumps(last) + "\n")
            if writer is not None:
                for k, v in last.items():
                    if k != "step":
                        writer.add_scalar(f"rl/{k}", v, step + 1)
            if progress is not None:
                progress.update(task, advance=1, reward=last["reward"], kl=last["kl"], acc=last["accuracy"])
        if (step + 1) % cfg.save_steps == 0 or step + 1 == total:
            _save_checkpoint(acc, out, step + 1, cfg.save_total_limit)
    if progress is not None:
        progress.stop()
    if writer is not None:
        writer.close()
    return _finish(cfg, acc, model, tok, {"global_step": total, "resumed_from": str(ckpt) if ckpt else None,
                                          "world_size": world, "last_metrics": last}, sorted(sampled))


def _update(cfg: RLConfig, acc: Any, model: Any, ref: Any, optim: Any, sched: Any, seqs: list[dict],
            pad_id: int) -> tuple[float, float, float]:
    """ppo_epochs passes of minibatch updates over one step's samples; returns summed loss, KL, clip."""
    import torch

    mbs = [_batches(seqs[i : i + cfg.per_device_batch_size], pad_id, acc.device)
           for i in range(0, len(seqs), cfg.per_device_batch_size)]
    accum = cfg.gradient_accumulation_steps
    single = cfg.ppo_epochs == 1 and len(mbs) <= accum  # one update: the sampling policy is the current one
    with torch.no_grad(), acc.autocast():
        for mb in mbs:
            if not single:
                mb["old"] = token_logprobs(model, mb["input_ids"], mb["attention_mask"])
            if ref is not None:
                mb["ref"] = token_logprobs(ref, mb["input_ids"], mb["attention_mask"])
            elif cfg.kl_coef > 0:  # LoRA: the reference is the base model, adapters off
                with acc.unwrap_model(model).disable_adapter():
                    mb["ref"] = token_logprobs(model, mb["input_ids"], mb["attention_mask"])
    loss_sum = kl_sum = clip_sum = 0.0
    for _ in range(cfg.ppo_epochs):
        for g0 in range(0, len(mbs), accum):
            group = mbs[g0 : g0 + accum]
            n_group = sum(mb["input_ids"].shape[0] for mb in group)
            for j, mb in enumerate(group):
                sync = j == len(group) - 1
                ctx = acc.no_sync(model) if not sync else _null()
                with ctx, acc.autocast():
                    logp = token_logprobs(model, mb["input_ids"], mb["attention_mask"])
                    old = logp.detach() if single else mb["old"]
                    per_seq, kl, clipped = policy_loss(logp, old, mb.get("ref"), mb["adv"], mb["mask"],
                                                       clip_eps=cfg.clip_eps, kl_coef=cfg.kl_coef)
                    loss = per_seq.sum() / n_group
                    acc.backward(loss)
                loss_sum += float(per_seq.detach().sum()) / cfg.ppo_epochs
                kl_sum += float(kl.detach().sum()) / cfg.ppo_epochs
                clip_sum += float(clipped.detach()) / len(group)
            if cfg.max_grad_norm > 0:
                acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optim.step()
            sched.step()
            optim.zero_grad(set_to_none=True)
    if not math.isfinite(loss_sum):
        raise FloatingPointError(f"RL loss is not finite ({loss_sum}); lower learning_rate or check the model")
    return loss_sum, kl_sum, clip_sum


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(main: bool, total: int, start: int):
    if not main:
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("[bold]rl"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        TextColumn("reward {task.fields[reward]:.3f} kl {task.fields[kl]:.4f} acc {task.fields[acc]:.2f}"))
    task = progress.add_task("rl", total=total, completed=start, reward=0.0, kl=0.0, acc=0.0)
    progress.start()
    return progress, task


def _truncate_metrics(path: Path, start: int) -> None:
    """Drop metric lines past the step a run resumes from (written before an interruption)."""
    if path.exists():
        keep = [x for x in path.read_text().splitlines() if x.strip() and json.loads(x)["step"] <= start]
        path.write_text("".join(x + "\n" for x in keep))


def _save_checkpoint(acc: Any, out: Path, step: int, limit: int | None) -> None:
    ckpt = out / f"checkpoint-{step}"
    acc.save_state(str(ckpt))
    if acc.is_main_process:
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        if limit is not None:
            old = sorted((p for p in out.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                         key=lambda p: int(p.name.split("-")[-1]))
            for p in old[:-limit]:
                shutil.rmtree(p, ignore_errors=True)
    acc.wait_for_everyone()


def _finish(cfg: RLConfig, acc: Any, model: Any, tok: Any, summary: dict[str, Any], sampled: list[str]) -> Path:
    out = Path(cfg.output_dir)
    acc.wait_for_everyone()
    net = acc.unwrap_model(model)
    if cfg.write_rank_checksums:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank_{acc.process_index}.json").write_text(json.dumps({
            "rank": acc.process_index, "world_size": acc.num_processes,
            "global_step": summary["global_step"], "checksum": weights_checksum(net), "questions": sampled}))
    acc.wait_for_everyone()
    if acc.is_main_process:
        if cfg.lora and cfg.merge_lora:
            net = net.merge_and_unload()
        net.save_pretrained(out)
        tok.save_pretrained(out)
        (out / SUMMARY_FILE).write_text(json.dumps({"stage": "rl", **summary, "config": to_dict(cfg)},
                                                   indent=2, default=str))
    acc.wait_for_everyone()
    return out
