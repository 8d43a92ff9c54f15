"""`steiner generate`: ask a trained model one question; print its numbered steps and its answer."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from steiner.config import ConfigError, check_range, opt
from steiner.infer.options import DecodeOptions


@dataclass
class GenerateConfig:
    """Options of `steiner generate` (each documented once, here)."""

    model: str = opt("", "save_pretrained folder of the model and its tokenizer")
    prompt: str = opt("", "the user message")
    system: str | None = opt(None, "an optional system message")
    min_steps: int = opt(0, "reasoning may not end before this many steps")
    max_steps: int | None = opt(None, "reasoning must end after this many steps")
    temperature: float = opt(0.7, "sampling temperature; 0 decodes greedily")
    top_p: float = opt(1.0, "nucleus sampling mass")
    max_new_tokens: int = opt(1024, "generation length limit (reasoning and answer)")
    seed: int | None = opt(None, "random seed for reproducible sampling")
    n: int = opt(1, "number of samples to draw")
    format_strict: bool = opt(False, "enforce the whole reasoning format with FormatLogitsProcessor")
    max_reasoning_tokens: int | None = opt(None, "reasoning token budget; closes the open step and ends reasoning")
    raw: bool = opt(False, "print the raw completion with its special tokens instead of numbered steps")

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("model: a model folder is required (--model DIR)")
        if not self.prompt:
            raise ConfigError("prompt: a prompt is required (--prompt TEXT)")
        check_range("min_steps", self.min_steps, lo=0)
        check_range("max_steps", self.max_steps, lo=0)
        check_range("temperature", self.temperature, lo=0)
        check_range("top_p", self.top_p, lo=0, hi=1, lo_open=True)
        check_range("max_new_tokens", self.max_new_tokens, lo=1)
        check_range("n", self.n, lo=1)
        check_range("max_reasoning_tokens", self.max_reasoning_tokens, lo=1)

    def decode_options(self) -> DecodeOptions:
        """The sampling part of this config as the shared `steiner.infer.DecodeOptions`."""
        return DecodeOptions(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
                             min_steps=self.min_steps, max_steps=self.max_steps, format_strict=self.format_strict,
                             max_reasoning_tokens=self.max_reasoning_tokens, seed=self.seed)


def register(sub: argparse._SubParsersAction) -> None:
    from steiner.config import add_command

    add_command(sub, "generate", GenerateConfig, main, help="generate reasoning and an answer with a trained model",
                description=main.__doc__)


def main(cfg: GenerateConfig) -> int:
    """Load the model, generate with the step bounds (and format/budget options), print the result."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.text import Text

    from steiner.infer.generation import generate
    from steiner.infer.pretty import format_reasoning
    from steiner.tokenizer import load_model, load_tokenizer

    console = Console()
    tokenizer = load_tokenizer(cfg.model)
    with console.status(f"loading {cfg.model}"):
        model = load_model(cfg.model)
    messages = ([{"role": "system", "content": cfg.system}] if cfg.system else []) + [
        {"role": "user", "content": cfg.prompt}]
    with console.status("generating"):
        [samples] = generate(model, tokenizer, [messages], cfg.decode_options(), n=cfg.n)
    for i, g in enumerate(samples, start=1):
        title = f"sample {i}/{len(samples)}" if len(samples) > 1 else "completion"
        subtitle = (f"{len(g.path.steps)} steps, {g.path.num_backtracks} backtracks, {g.reasoning_tokens} reasoning "
                    f"tokens, {g.completion_tokens} tokens, finish={g.finish_reason}")
        body = g.text if cfg.raw else format_reasoning(g.path)
        console.print(Panel(Text(body), title=title, subtitle=subtitle, expand=False))
    return 0
