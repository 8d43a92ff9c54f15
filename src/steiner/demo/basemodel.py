"""The quick demo's built-in base model: a tiny LM pretrained on Countdown drill text only.

The recipe starts from a base model that already knows arithmetic (Steiner's is Qwen2.5). Built from
a config, the demo's model must learn the arithmetic in its CPT (~5.7M tokens, ten minutes on two
cores), which the ten-minute quick run cannot afford (from scratch its model scores ~0, arithmetic 0.12
teacher-forced). So both runs start from this base by default (`--base-model builtin`), as a user starts
from theirs: the quick run scores 0.38 in 9.8 minutes, the full run 0.955 in 48.8 (docs/demo.md session 33).

The base is the demo's own tokenizer and model shape (a 512-token BPE trained on the domain's text,
every whole number below 2,000 one token; hidden 128, 4 layers, tied embeddings), pretrained with
`steiner train cpt` on drill text only -- no reasoning paths, no problems. Two rounds of 30,000 fact
documents (``12*7=84 (39? no)``, `steiner.countdown.text.arithmetic_documents`) taught it the facts
(0.998), yet a quick model from it copied neither the question's numbers nor a held-out target into its
first step and scored 0-0.02 (docs/demo.md session 31). A third round of 30,000 documents, two thirds of
them state drill (three numbers and a target, then a few of their first moves, each after the numbers
it starts from; every target value, a held-out one only with numbers that cannot make it:
`state_documents`) taught both copies, and the quick model from it scores 0.38 (docs/demo.md session 33).
CPT extends its tokenizer with the 14 reasoning tokens, as it does for any base model; their rows are
never trained here. It ships in ``steiner/data/countdown_base`` (fp16, 2.7 MB); ``steiner_base.json``
records how, round by round. Rebuilt with ``python -m steiner.demo.basemodel --out BASE`` (`main`, the
two fact rounds, ~33 minutes on two cores), then ``python -m steiner.demo.basemodel --from-model BASE
--rounds 1 --drill-docs 30000 --state-share 0.6666667 --seed 2`` (20 minutes).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steiner.config import check_range, opt, to_dict

BUILTIN = "builtin"  # the value of `--base-model` that names the shipped base


def builtin_path() -> Path:
    """Folder of the shipped base model (``steiner/data/countdown_base``)."""
    return Path(__file__).resolve().parent.parent / "data" / "countdown_base"


def resolve_base_model(name: str) -> Path:
    """The folder ``--base-model`` names: ``builtin`` is the shipped base; anything else a path."""
    p = builtin_path() if name == BUILTIN else Path(name)
    if not (p / "config.json").is_file():
        what = "the built-in base model" if name == BUILTIN else f"base model {name!r}"
        raise FileNotFoundError(f"{what}: {str(p)!r} holds no config.json (expected a save_pretrained folder)")
    return p


@dataclass
class BaseModelConfig:
    """How the built-in base model is made (defaults: the shipped one)."""

    out: str = opt("src/steiner/data/countdown_base", "folder the base model and its tokenizer are written to (fp16)")
    work: str = opt("runs/countdown-base", "folder for the corpus and the pretraining run")
    seed: int = opt(0, "seed of the corpus, the tokenizer, the initialisation and the training")
    problems: int = opt(2000, "Countdown problems whose questions and searches train the tokenizer (as the demo's)")
    hidden_size: int = opt(128, "model width (the demo's)")
    num_layers: int = opt(4, "model depth (the demo's)")
    drill_docs: int = opt(30000, "arithmetic drill documents to pretrain on (~215 tokens each)")
    epochs: float = opt(1.0, "passes over each round's drill")
    rounds: int = opt(2, "rounds of pretraining, each on drill_docs fresh documents (seed + round) from the last "
                         "(one round: 0.83 of the drill's facts right; two: 0.998, docs/demo.md session 31)")
    state_share: float = opt(0.0, "share of each round's documents that are state drill (three numbers, a few of "
                                   "their first moves, each after the numbers it starts from; a held-out target only "
                                   "with numbers that cannot make it; steiner.countdown.text.state_documents); the rest is fact drill")
    from_model: str = opt("", "continue this base model (a save_pretrained folder; 'builtin': the shipped one) "
                              "instead of building one from the demo's tokenizer and shape")
    learning_rate: float = opt(2e-3, "peak learning rate")
    compile: bool = opt(False, "train under torch.compile")

    def __post_init__(self) -> None:
        check_range("drill_docs", self.drill_docs, lo=1)
        for name in ("rounds", "problems", "hidden_size", "num_layers"):
            check_range(name, getattr(self, name), lo=1)
        check_range("epochs", self.epochs, lo=0.0)
        check_range("state_share", self.state_share, lo=0.0, hi=1.0)


def main(cfg: BaseModelConfig) -> dict[str, Any]:
    """Write the corpus, build the tokenizer and model as the demo does, pretrain on drill only, save fp16."""
    import torch

    from steiner.countdown.problems import held_out_targets
    from steiner.countdown.text import drill_documents
    from steiner.demo import DemoConfig
    from steiner.demo import stages as s
    from steiner.tokenizer import load_model, load_tokenizer
    from steiner.train.cpt import CPTConfig
    from steiner.train.cpt import main as cpt_main

    work = Path(cfg.work)
    demo = DemoConfig(seed=cfg.seed, cpt_docs=cfg.drill_docs, drill_state_share=0.0, budget_fraction=0.0,
                      problems=cfg.problems, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                      base_model="")  # the demo's tokenizer and shape, built from a config
    earlier = None  # how the model this run continues was made, kept in its record
    if cfg.from_model:
        model_dir = resolve_base_model(cfg.from_model)
        if (model_dir / "steiner_base.json").is_file():
            earlier = json.loads((model_dir / "steiner_base.json").read_text())
    else:
        # the demo's own synthesis and base stage: the tokenizer is trained on the domain's text (questions,
        # searches, drill) as a real base model's covers its users' text; the model gets the demo's shape
        for name, build, run in (("synth", lambda d: s.synth(demo, d), s.run_synth),
                                 ("base", lambda d: s.base(demo, work / "synth"), s.run_base)):
            d = work / name
            d.mkdir(parents=True, exist_ok=True)
            run(build(d), d)
        model_dir = work / "base" / "model"
    held_out = held_out_targets(tuple(demo.target_range))
    seconds, summaries = 0.0, []
    for r in range(cfg.rounds):
        if r == 0 and not (cfg.from_model or cfg.state_share):
            drill = work / "base" / "arithmetic.txt"  # the base stage wrote these very documents (its tokenizer's text)
        else:  # fresh documents each round: more facts compared with more targets, not the same text again
            drill = work / f"drill{r}.txt"
            docs = drill_documents(cfg.drill_docs, cfg.seed + r, state_share=cfg.state_share,
                                   number_range=demo.number_range, target_range=demo.target_range, held_out=held_out)
            drill.parent.mkdir(parents=True, exist_ok=True)
            drill.write_text("\n\n".join(docs) + "\n")
        out_dir = work / ("cpt" if r == 0 else f"cpt{r}")
        cpt = CPTConfig(model=str(model_dir), output_dir=str(out_dir), seed=cfg.seed + r, text_files=[str(drill)],
                        paths_files=[], reasoning_ratio=0.0, num_epochs=cfg.epochs, max_length=1024,
                        per_device_batch_size=4, learning_rate=cfg.learning_rate, warmup_ratio=0.05,
                        save_steps=100_000, logging_steps=50, torch_compile=cfg.compile, resume=False)
        t0 = time.perf_counter()
        cpt_main(cpt)
        seconds += time.perf_counter() - t0
        summaries.append(s._summary(out_dir))
        model_dir = out_dir
    out = Path(cfg.out)
    if out.exists():
        shutil.rmtree(out)
    model = load_model(model_dir, dtype=torch.float32).to(torch.float16)
    tok = load_tokenizer(model_dir)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    info = {"params": sum(p.numel() for p in model.parameters()), "vocab": len(tok), "config": to_dict(cfg),
            "train_seconds": round(seconds, 1), "steps": sum(x.get("global_step", 0) for x in summaries),
            "train_loss": [x.get("train_loss") for x in summaries], "tokens": sum(
                (x.get("data") or {}).get("text_tokens", 0) for x in summaries)}
    if earlier is not None:
        info["continued_from"] = earlier
    (out / "steiner_base.json").write_text(json.dumps(info, indent=2))
    return info


if __name__ == "__main__":
    import argparse

    from steiner.config import add_arguments, config_from_args

    parser = argparse.ArgumentParser(prog="python -m steiner.demo.basemodel", description=__doc__.split("\n")[0])
    add_arguments(parser, BaseModelConfig)
    print(json.dumps(main(config_from_args(BaseModelConfig, parser.parse_args())), indent=2))
