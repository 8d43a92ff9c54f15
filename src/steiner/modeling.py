"""Build a small Qwen2-architecture causal LM from a config: the demo's model and the tests'."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from steiner.config import check_range, opt

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class TinyModelConfig:
    """Shape of a from-scratch Qwen2 model; the vocabulary comes from the tokenizer."""

    hidden_size: int = opt(64, "width of the residual stream")
    num_layers: int = opt(2, "transformer blocks")
    num_heads: int = opt(4, "attention heads (key/value heads too)")
    intermediate_size: int = opt(256, "MLP width")
    max_position_embeddings: int = opt(2048, "longest sequence the rotary embedding is set up for")
    tie_word_embeddings: bool = opt(False, "share input and output embeddings")
    seed: int = opt(0, "weight initialisation seed")

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings"):
            check_range(name, getattr(self, name), lo=1)
        if self.hidden_size % self.num_heads:
            from steiner.config import ConfigError

            raise ConfigError(f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")


def build_model(tokenizer: PreTrainedTokenizerBase, cfg: TinyModelConfig | None = None) -> PreTrainedModel:
    """A freshly initialised `Qwen2ForCausalLM` sized to ``tokenizer`` (rows padded to a multiple of 8)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = cfg or TinyModelConfig()
    vocab = (len(tokenizer) + 7) // 8 * 8
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(cfg.seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
