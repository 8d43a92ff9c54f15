"""Shared tiny pieces: a locally trained tokenizer with the reasoning tokens, a tiny Qwen2 model."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CORPUS = [
    "Use the numbers 3, 5, 7 and 11 to reach 24 with + - * /. Each number once.",
    "Step: combine 3 and 5 with + to get 8. Remaining numbers: 7, 8, 11. Summary: 3+5=8.",
    "Reflection: this line looks promising; 8 and 11 are still far from 24. Backtrack and try 7*3=21.",
    "The answer is (11-7)*(3+3)=24. Reasoning step summary thought name reflection start end.",
    "Plain text about the weather, cooking, and history keeps the tokenizer general.",
] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A 400-token byte-level BPE tokenizer trained here, extended with the reasoning tokens."""
    from steiner.tokenizer import train_tokenizer

    return train_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture
def tiny_model(tiny_tokenizer):
    """A fresh 2-layer, 64-wide Qwen2ForCausalLM sized to ``tiny_tokenizer``."""
    from steiner.modeling import build_model

    return build_model(tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A save_pretrained folder (model + tokenizer + chat template) of an untrained tiny model."""
    from steiner.modeling import build_model

    out = tmp_path_factory.mktemp("tiny_model")
    build_model(tiny_tokenizer).save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out
