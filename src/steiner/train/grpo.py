"""`SteinerGRPOTrainer`: TRL's GRPOTrainer with the reasoning format enforced while sampling, forced
tokens masked out of the loss, and (mode ``step``) DAG step rewards as (B, T) token advantages.

It changes GRPOTrainer at three documented seams and nowhere else:

- ``_generate_single_turn`` (transformers ``generate`` path): samples with the format processor
  (`steiner.infer.format_processor.FormatLogitsProcessor`: grammar, step bounds, token budget). With
  ``use_vllm`` TRL's own path runs: requests opt in to steiner's vLLM v1 processors through
  ``SamplingParams.extra_args`` (``vllm_xargs`` in server mode), and in colocate mode the ``LLM`` TRL builds gets those processor
  classes. That path has not been run (no vLLM GPU here).
- the reward function `SteinerGRPOTrainer.steiner_reward`: parses each completion (special tokens
  kept) and scores it with `steiner.train.rewards.completion_reward` (the one grader; in step mode the
  steps verified and matched against the question's DAG); TRL normalises the returned scalar per
  group (plain GRPO).
- ``_generate_and_score_completions``: after TRL, sets ``tool_mask`` (TRL's loss-only mask) to the
  tokens the policy actually chose -- a token the processor forced (one allowed id) has probability 1
  under the sampling distribution and carries no gradient; recorded while sampling with transformers,
  found by replaying the processor on the ids after vLLM sampling (`forced_mask`) -- and, in step mode, replaces the
  advantages by the process-supervised (B, T) ones of `steiner.train.advantages`, computed over each
  whole group even when a group spans processes.

Log-probabilities, the ratio, clipping, KL to the reference (the adapter-disabled policy under LoRA)
and the loss types are TRL's; TRL computes log-probs at the sampling ``temperature``.
"""

from __future__ import annotations

import functools
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TrainerCallback
from trl import GRPOTrainer

from steiner.infer.generation import make_generation
from steiner.tokenizer import ReasoningTokenIds
from steiner.train.advantages import group_step_credits, step_spans, token_advantages
from steiner.train.rewards import PathReward, StepMatcher, completion_reward

if TYPE_CHECKING:
    from steiner.train.rl import RLConfig, RLItem

METRICS_FILE = "metrics.jsonl"


def forced_mask(processors: list, prompt_ids: torch.Tensor, completion_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) long: 1 where the processors left exactly one allowed token (the token was forced), else 0.

    ``prompt_ids`` are left-padded to one width, so every completion starts at the same column. The
    processors are replayed on each prefix; their state is a function of the ids, so the replay sees
    what sampling saw. A processor with ``rules`` and a ``table`` (steiner's) is read through its rule
    table; any other is run on zero scores and its finite entries counted.
    """
    rows, width = prompt_ids.shape
    t_len = completion_ids.shape[1]
    forced = torch.zeros((rows, t_len), dtype=torch.long, device=completion_ids.device)
    if not processors or t_len == 0:
        return forced
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    for proc in processors:
        if hasattr(proc, "reset"):
            proc.reset()
    single: list[set[int]] = []
    for proc in processors:
        table = getattr(proc, "table", None)
        single.append({r for r, allowed in table.allowed.items() if len(allowed) == 1} if table is not None else set())
    for t in range(t_len):
        prefix = ids[:, : width + t]
        one = torch.zeros(rows, dtype=torch.bool, device=ids.device)
        for proc, singles in zip(processors, single, strict=True):
            if hasattr(proc, "rules") and hasattr(proc, "table"):
                rules = proc.rules(prefix)
                if singles:
                    one |= torch.isin(rules, torch.tensor(sorted(singles), device=rules.device))
            else:  # a generic processor: count what it leaves finite
                vocab = int(ids.max()) + 1
                out = proc(prefix, torch.zeros((rows, vocab), device=ids.device))
                one |= torch.isfinite(out).sum(-1) == 1
        forced[:, t] = one.long()
    return forced


VLLM_PROCESSORS = ("SteinerFormatLogitsProcessor", "SteinerStepBoundsLogitsProcessor")


def vllm_processor_classes() -> list[type]:
    """steiner's vLLM v1 logits-processor classes that exist (`steiner.infer.vllm_processors`)."""
    import steiner.infer.vllm_processors as vp

    out = []
    for name in VLLM_PROCESSORS:
        try:
            out.append(getattr(vp, name))
        except (AttributeError, ImportError):
            continue
    return out


def vllm_generation_kwargs(kwargs: dict | None, mode: str, options: dict[str, Any]) -> dict:
    """TRL's ``generation_kwargs`` with the processor ``options`` added as the per-request opt-in of
    steiner's vLLM v1 processors: ``extra_args`` of SamplingParams (colocate), which vLLM's HTTP API
    takes as ``vllm_xargs`` (server). Unset options are left out, flags sent as 0/1."""
    key = "extra_args" if mode == "colocate" else "vllm_xargs"
    extra = dict((kwargs or {}).get(key) or {})
    extra.update({k: int(v) if isinstance(v, bool) else v for k, v in options.items() if v is not None})
    return {**(kwargs or {}), key: extra}


@contextmanager
def _vllm_processors_installed(mode: str):
    """Colocate mode: the ``LLM`` TRL builds gets steiner's processors (TRL 1.16 passes none). Server
    mode: the server needs ``--logits-processors`` itself (docs/train.md)."""
    import trl.generation.vllm_generation as vg

    original = getattr(vg, "LLM", None)  # absent when vLLM is not installed (TRL then fails on its own)
    classes = vllm_processor_classes() if mode == "colocate" and original is not None else []
    if not classes:
        yield
        return
    vg.LLM = functools.partial(original, logits_processors=classes)
    try:
        yield
    finally:
        vg.LLM = original


class ForcedRecorder(LogitsProcessor):
    """Wraps a logits processor and records, per call, which rows it left exactly one token (forced).

    ``forced()`` is (rows, calls) long. It sits where the wrapped processor sat, so it sees the
    format processor's output before temperature and top-p (which come after custom processors).
    """

    def __init__(self, inner: LogitsProcessor) -> None:
        self.inner = inner
        self.calls: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = self.inner(input_ids, scores)
        self.calls.append(torch.isfinite(out).sum(-1) == 1)
        return out

    def forced(self) -> torch.Tensor:
        return torch.stack(self.calls, 1).long() if self.calls else torch.zeros((0, 0), dtype=torch.long)


class SteinerGRPOTrainer(GRPOTrainer):
    """GRPOTrainer for steiner RL: ``steiner`` is the `RLConfig`, ``items`` the questions by id
    (each row of ``train_dataset`` has ``prompt`` and ``qid``). Other arguments are GRPOTrainer's."""

    def __init__(self, *args: Any, steiner: RLConfig, items: dict[str, RLItem], **kwargs: Any) -> None:
        self.steiner = steiner
        self.items = items
        self._matcher = StepMatcher(steiner) if steiner.mode == "step" else None
        self._scored: list[tuple[PathReward, int, bool]] = []
        self._timing = {"generate_seconds": 0.0, "reward_seconds": 0.0}
        self._forced: torch.Tensor | None = None  # (rows, T) recorded by the last transformers generate
        grpo_args = kwargs.get("args")
        if grpo_args is not None and grpo_args.use_vllm:
            grpo_args.generation_kwargs = vllm_generation_kwargs(grpo_args.generation_kwargs, grpo_args.vllm_mode,
                                                                 self.processor_options())
            with _vllm_processors_installed(grpo_args.vllm_mode):
                super().__init__(*args, reward_funcs=[self.steiner_reward], **kwargs)
        else:
            super().__init__(*args, reward_funcs=[self.steiner_reward], **kwargs)
        self.tids = ReasoningTokenIds.from_tokenizer(self._tokenizer)

    # ---- generation -------------------------------------------------------------------------------

    def processor_options(self) -> dict[str, Any]:
        """The format processor's options (also the ``extra_args`` steiner's vLLM adapters read)."""
        c = self.steiner
        return {"format_strict": True, "min_steps": c.min_reasoning_steps, "max_steps": c.max_reasoning_steps,
                "max_reasoning_tokens": c.max_reasoning_tokens}

    def decode_options(self) -> Any:
        """RL's sampling as the one `steiner.infer.DecodeOptions` that generate, eval and serve use too."""
        from steiner.infer.options import DecodeOptions

        c, o = self.steiner, self.processor_options()
        return DecodeOptions(temperature=c.temperature, top_p=c.top_p, max_new_tokens=c.max_new_tokens,
                             min_steps=o["min_steps"], max_steps=o["max_steps"], format_strict=True,
                             max_reasoning_tokens=o["max_reasoning_tokens"])

    def processors(self, prompt_width: int) -> list:
        """Fresh logits processors for completions that start at column ``prompt_width`` (the one
        processor factory, `steiner.infer.make_processors`: the format processor, which also closes
        every completion within ``max_new_tokens``)."""
        from steiner.infer.options import make_processors

        return make_processors(self._tokenizer, self.decode_options(), prompt_lengths=prompt_width)

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        t0 = time.perf_counter()
        if self.use_vllm or self.use_transformers_continuous_batching or images is not None or multimodal_fields:
            out = super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                has_tool_images)
            self._timing["generate_seconds"] += time.perf_counter() - t0
            return out
        from trl.models import unwrap_model_for_generation
        from trl.trainer.utils import pad

        device = self.accelerator.device
        prompts = [torch.tensor(ids) for ids in prompt_ids]
        ids = pad(prompts, padding_value=self._tokenizer.pad_token_id, padding_side="left",
                  pad_to_multiple_of=self.pad_to_multiple_of).to(device)
        mask = pad([torch.ones_like(p) for p in prompts], padding_value=0, padding_side="left",
                   pad_to_multiple_of=self.pad_to_multiple_of).to(device)
        with (
            unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                        gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                                        generation_kwargs=self.generation_kwargs,
                                        gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs)
            as unwrapped,
            torch.no_grad(),
            self._dist.summon_full_params(self.model_wrapped, recurse=False),
        ):
            recorders = [ForcedRecorder(p) for p in self.processors(ids.shape[1])]
            seqs = unwrapped.generate(input_ids=ids, attention_mask=mask, generation_config=self.generation_config,
                                      logits_processor=LogitsProcessorList(recorders))
        completion = seqs[:, ids.shape[1]:]
        forced = torch.zeros(completion.shape, dtype=torch.long)
        for r in recorders:
            f = r.forced().cpu()
            forced[:, : f.shape[1]] |= f[:, : completion.shape[1]]
        self._forced = forced
        is_eos = torch.isin(completion, torch.tensor(self.eos_token_ids, device=completion.device))
        first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(is_eos[:, 0], completion.shape[1],
                                                                                   dtype=torch.long))
        keep = torch.arange(completion.shape[1], device=completion.device)[None, :] <= first[:, None]
        self._timing["generate_seconds"] += time.perf_counter() - t0
        return [c[m].tolist() for c, m in zip(completion.cpu(), keep.cpu(), strict=True)], None

    # ---- rewards ----------------------------------------------------------------------------------

    def steiner_reward(self, prompts: list, completions: list, completion_ids: list[list[int]], qid: list[str],
                       **_: Any) -> list[float]:
        """Score each completion; return its outcome reward (mode outcome) or total reward (mode step).

        The full `PathReward` of each row is kept for the step advantages and the metrics."""
        t0 = time.perf_counter()
        c = self.steiner
        out = []
        self._scored = []
        for ids, q in zip(completion_ids, qid, strict=True):
            item = self.items[q]
            gen = make_generation(self._tokenizer, ids, eos_ids=self.eos_token_ids)
            pr = completion_reward(item.record, item.dag if c.mode == "step" else None, gen.path, c, self._matcher)
            self._scored.append((pr, gen.path.num_backtracks, gen.finish_reason == "length"))
            out.append(pr.total if c.mode == "step" else pr.outcome)
        self._timing["reward_seconds"] += time.perf_counter() - t0
        return out

    # ---- advantages and masks ---------------------------------------------------------------------

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        from accelerate.utils import gather_object

        out = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        comp, cmask = out["completion_ids"], out["completion_mask"]
        recorded, self._forced = self._forced, None
        if recorded is not None and recorded.shape[0] == comp.shape[0]:  # transformers generate: as sampled
            forced = torch.zeros_like(comp)
            width = min(comp.shape[1], recorded.shape[1])
            forced[:, :width] = recorded[:, :width].to(comp.device)
        else:  # vLLM: replay the processor on the sampled ids
            forced = forced_mask(self.processors(out["prompt_ids"].shape[1]), out["prompt_ids"], comp)
        sampled = (1 - forced) * (out["tool_mask"] if "tool_mask" in out else 1)
        out["tool_mask"] = sampled
        loss_mask = cmask * sampled
        out["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        scored = self._scored
        if len(scored) != comp.shape[0]:
            raise RuntimeError(f"{len(scored)} scored completions for {comp.shape[0]} rows")
        g = self.num_generations if mode == "train" else self.num_generations_eval
        everyone = gather_object([(p.steps, p.path + p.outcome) for p, _, _ in scored])
        if len(everyone) % g:
            raise RuntimeError(f"{len(everyone)} completions do not split into groups of {g}")
        lo = self.accelerator.process_index * comp.shape[0]
        if self.steiner.mode == "outcome":  # TRL's (r - mean) / (std + eps) leaves rounding residue: make it 0
            same = [all(e[1] == everyone[s][1] for e in everyone[s : s + g]) for s in range(0, len(everyone), g)]
            rows = torch.tensor([same[(lo + i) // g] for i in range(comp.shape[0])], device=comp.device)
            out["advantages"] = torch.where(rows, torch.zeros_like(out["advantages"]), out["advantages"])
        else:
            credits: list[list[float]] = []
            seq: list[float] = []
            for s in range(0, len(everyone), g):
                cs, sq = group_step_credits([e[0] for e in everyone[s : s + g]], [e[1] for e in everyone[s : s + g]],
                                            sequence_weight=self.steiner.sequence_weight,
                                            scale=self.scale_rewards != "none", std_floor=self.steiner.adv_std_floor)
                credits += cs
                seq += sq
            adv = torch.zeros(comp.shape, dtype=torch.float32, device=comp.device)
            for i in range(comp.shape[0]):
                n = int(cmask[i].sum())
                ids = comp[i, :n].tolist()
                adv[i, :n] = token_advantages(credits[lo + i], seq[lo + i], step_spans(ids, self.tids, len(credits[lo + i])), n,
                                              self.steiner.step_credit)
            out["advantages"] = adv
        self._log_steiner_metrics(mode, scored, forced, cmask)
        return out

    def _log_steiner_metrics(self, mode: str, scored: list, forced: torch.Tensor, cmask: torch.Tensor) -> None:
        dev = self.accelerator.device
        rows = [[float(p.correct), float(p.format_ok), len(p.steps), bt, p.matched / max(1, len(p.steps)),
                 float(len(p.steps) == 0), float(trunc)] for p, bt, trunc in scored]
        local = torch.tensor([sum(col) for col in zip(*rows, strict=True)] + [len(rows), float((forced * cmask).sum()),
                             float(cmask.sum())], dtype=torch.float64, device=dev)
        tot = self.accelerator.reduce(local, reduction="sum").tolist()
        n = max(tot[7], 1.0)
        names = ["accuracy", "format_valid", "mean_steps", "backtracks", "matched", "no_steps", "truncated"]
        for i, k in enumerate(names):
            self._metrics[mode][k].append(tot[i] / n)
        self._metrics[mode]["forced_fraction"].append(tot[8] / max(tot[9], 1.0))
        for k, v in self._timing.items():
            self._metrics[mode][k].append(v)
            self._timing[k] = 0.0


class MetricsFile(TrainerCallback):
    """One JSON line per log event in ``output_dir/metrics.jsonl``: ``step`` counts RL steps (rounds of
    sampling + updates), ``seconds`` is the wall time per RL step since the previous line."""

    def __init__(self, out: Path, updates_per_step: int) -> None:
        self.path = Path(out) / METRICS_FILE
        self.updates = updates_per_step
        self._t = time.perf_counter()
        self._step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._t = time.perf_counter()
        self._step = state.global_step // self.updates
        if state.is_world_process_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():  # drop lines past the step a resumed run starts from
                keep = [x for x in self.path.read_text().splitlines() if x.strip() and json.loads(x)["step"] <= self._step]
                self.path.write_text("".join(x + "\n" for x in keep))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
        step = state.global_step // self.updates
        if not logs or "loss" not in logs or step == self._step:
            return
        now = time.perf_counter()
        line = {"step": step, "seconds": (now - self._t) / (step - self._step), **logs}
        self._t, self._step = now, step
        if state.is_world_process_zero:
            with self.path.open("a") as fh:
                fh.write(json.dumps(line) + "\n")
