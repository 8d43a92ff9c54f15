"""Extend any Hugging Face fast tokenizer and causal LM with the 14 reasoning tokens; the chat template.

Nothing here hard-codes a token id: `ReasoningTokenIds` resolves them from the tokenizer in use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steiner.format import SPECIAL_TOKENS, TOKEN_DESCRIPTIONS

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# ChatML turn markers, as Qwen2 uses them; a tokenizer trained from scratch gets them too.
CHAT_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_TEMPLATE_PATH = Path(__file__).parent / "templates" / "chat_template.jinja"


@dataclass(frozen=True)
class ReasoningTokenIds:
    """Ids of the 14 reasoning tokens in one tokenizer, resolved by name."""

    reasoning_start: int
    reasoning_end: int
    proceed: int
    backtrack: int
    step_start: int
    step_end: int
    name_start: int
    name_end: int
    thought_start: int
    thought_end: int
    summary_start: int
    summary_end: int
    reflection_start: int
    reflection_end: int

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> ReasoningTokenIds:
        """Look every token up; raise ValueError naming those the tokenizer lacks."""
        vocab = tokenizer.get_vocab()
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise ValueError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} lacks reasoning tokens {missing}; "
                "run steiner.tokenizer.extend_tokenizer (or `steiner tokenizer extend`) first"
            )
        return cls(*(vocab[t] for t in SPECIAL_TOKENS))

    def all(self) -> list[int]:
        return [getattr(self, f.name) for f in fields(self)]

    @property
    def decisions(self) -> list[int]:
        return [self.proceed, self.backtrack, self.reasoning_end]


def chat_template() -> str:
    """The Jinja chat template that renders reasoning steps (see templates/chat_template.jinja)."""
    return _TEMPLATE_PATH.read_text()


def extend_tokenizer(tokenizer: PreTrainedTokenizerBase, *, set_chat_template: bool = True) -> list[str]:
    """Add the reasoning tokens the tokenizer lacks as special tokens; return the names added.

    Tokens already present keep their ids. Also installs the chat template and, when the tokenizer
    has none, the ChatML end-of-turn token as eos and pad.
    """
    from tokenizers import AddedToken

    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} is not a fast tokenizer "
            f"({type(tokenizer).__name__}); steiner needs a PreTrainedTokenizerFast"
        )
    vocab = tokenizer.get_vocab()
    wanted = [t for t in CHAT_TOKENS + SPECIAL_TOKENS if t not in vocab]
    # ChatML markers are only added when the tokenizer has no chat markup of its own
    if getattr(tokenizer, "chat_template", None) and "<|im_start|>" not in vocab:
        wanted = [t for t in wanted if t not in CHAT_TOKENS or t == "<|endoftext|>"]
    if wanted:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in wanted], special_tokens=True)
    if set_chat_template:
        tokenizer.chat_template = chat_template()
    if tokenizer.eos_token is None:
        tokenizer.eos_token = "<|im_end|>" if "<|im_end|>" in tokenizer.get_vocab() else "<|endoftext|>"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|endoftext|>" if "<|endoftext|>" in tokenizer.get_vocab() else tokenizer.eos_token
    return wanted


def _description_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    ids = tokenizer(" " + text, add_special_tokens=False)["input_ids"]
    return [i for i in ids if i not in set(tokenizer.all_special_ids)]


def extend_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, init_ids: list[int] | None = None
) -> list[int]:
    """Resize the model's embeddings (never shrinking) and initialise the reasoning-token rows.

    Each new row is the mean embedding of its token's descriptive words ("reasoning step summary
    start"), in the input embeddings and, when untied, in the output layer, so the new tokens start
    near words the model already knows instead of at random. ``init_ids`` limits which token ids
    are initialised; by default every reasoning token whose row did not exist or whose id is new.
    Returns the ids that were initialised.
    """
    import torch

    ids = ReasoningTokenIds.from_tokenizer(tokenizer)
    old_rows = model.get_input_embeddings().weight.shape[0]
    need = max(old_rows, len(tokenizer))
    if need > old_rows:
        model.resize_token_embeddings(need, mean_resizing=False)
    if init_ids is None:
        init_ids = [i for i in ids.all() if i >= old_rows]
    emb_in = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tied = out is None or out.weight.data_ptr() == emb_in.data_ptr()
    by_id = dict(zip(ids.all(), SPECIAL_TOKENS, strict=True))
    with torch.no_grad():
        for tid in init_ids:
            words = _description_ids(tokenizer, TOKEN_DESCRIPTIONS[by_id[tid]])
            words = [w for w in words if w < old_rows and w not in by_id] or list(range(min(old_rows, 1000)))
            emb_in[tid] = emb_in[words].mean(0)
            if not tied:
                out.weight[tid] = out.weight[words].mean(0)
    model.config.vocab_size = model.get_input_embeddings().weight.shape[0]
    return list(init_ids)


def extend(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None = None) -> dict[str, Any]:
    """Extend a tokenizer and, if given, its model; return a summary of what changed."""
    rows_before = model.get_input_embeddings().weight.shape[0] if model is not None else None
    added = extend_tokenizer(tokenizer)
    ids = ReasoningTokenIds.from_tokenizer(tokenizer)
    initialised: list[int] = []
    if model is not None:
        added_ids = {tokenizer.convert_tokens_to_ids(t) for t in added}
        initialised = extend_model(
            model, tokenizer, init_ids=[i for i in ids.all() if i in added_ids or i >= rows_before]
        )
        if model.generation_config is not None:
            model.generation_config.eos_token_id = tokenizer.eos_token_id
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.config.eos_token_id = tokenizer.eos_token_id
        model.config.pad_token_id = tokenizer.pad_token_id
    return {
        "added_tokens": added,
        "token_ids": dict(zip(SPECIAL_TOKENS, ids.all(), strict=True)),
        "initialised_rows": initialised,
        "embedding_rows": model.get_input_embeddings().weight.shape[0] if model is not None else None,
        "embedding_rows_before": rows_before,
    }


def _check_dir(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} path {str(p)!r} does not exist")
    if not p.is_dir():
        raise NotADirectoryError(f"{what} path {str(p)!r} is not a directory (expected a save_pretrained folder)")
    return p


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load a fast tokenizer from a local folder with errors that name the path and the problem."""
    from transformers import AutoTokenizer

    p = _check_dir(path, "tokenizer")
    if not any((p / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        raise FileNotFoundError(f"tokenizer path {str(p)!r} holds no tokenizer.json or tokenizer_config.json")
    try:
        tok = AutoTokenizer.from_pretrained(str(p))
        if not _matches_file(tok, p / "tokenizer.json"):
            # transformers 5 rebuilds a tokenizer from the model family's class (a qwen2 config gets
            # Qwen2Tokenizer, which splits digits and drops BPE options): a tokenizer trained here
            # (e.g. the demo's, with whole numbers as tokens) must be read exactly as it was saved
            from transformers import PreTrainedTokenizerFast

            tok = PreTrainedTokenizerFast.from_pretrained(str(p))
    except Exception as e:  # noqa: BLE001 - re-raised with the path named
        raise ValueError(f"tokenizer at {str(p)!r} could not be loaded: {e}") from e
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"tokenizer at {str(p)!r} is not a fast tokenizer ({type(tok).__name__})")
    return tok


def _matches_file(tok: PreTrainedTokenizerBase, file: Path) -> bool:
    """Whether a loaded fast tokenizer has the model and pre-tokenizer of its saved ``tokenizer.json``."""
    if not file.is_file() or not getattr(tok, "is_fast", False):
        return True
    saved = json.loads(file.read_text())
    loaded = json.loads(tok.backend_tokenizer.to_str())
    keys = ("type", "ignore_merges", "byte_fallback")
    same_model = all(saved["model"].get(k) == loaded["model"].get(k) for k in keys)
    return same_model and saved.get("pre_tokenizer") == loaded.get("pre_tokenizer")


def load_model(path: str | Path, **kwargs: Any) -> PreTrainedModel:
    """Load a causal LM from a local folder with errors that name the path and the problem."""
    from transformers import AutoModelForCausalLM

    p = _check_dir(path, "model")
    if not (p / "config.json").exists():
        raise FileNotFoundError(f"model path {str(p)!r} holds no config.json")
    try:
        return AutoModelForCausalLM.from_pretrained(str(p), **kwargs)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"model at {str(p)!r} could not be loaded: {e}") from e


def extend_pretrained(base: str | Path, out: str | Path, *, tokenizer_only: bool = False) -> dict[str, Any]:
    """`steiner tokenizer extend`: load a save_pretrained folder, extend it, save to ``out``."""
    tok = load_tokenizer(base)
    model = None
    if not tokenizer_only and (Path(base) / "config.json").exists():
        model = load_model(base)
    info = extend(tok, model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    if model is not None:
        model.save_pretrained(out)
    (out / "steiner_tokens.json").write_text(json.dumps(info["token_ids"], indent=2))
    return info


def train_tokenizer(texts: list[str] | Any, vocab_size: int = 1024, *, extend_with_reasoning: bool = True,
                    number_tokens: int = 0, spaced_number_tokens: int = 0, isolate_numbers: bool = False):
    """Train a small byte-level BPE tokenizer locally (the demo's and the tests' tokenizer).

    A small vocabulary keeps the output layer cheap on a CPU. The ChatML markers are reserved first
    and, when ``extend_with_reasoning``, the 14 reasoning tokens are added after training.
    ``number_tokens=N`` makes every whole number below N one token ("224", not "22" + "4"), and
    ``spaced_number_tokens=M`` does the same for " 0" .. " M-1" (a number after a space): a tiny model
    then learns arithmetic as facts about whole numbers instead of carrying digits, which is what lets
    the demo's model compute its Countdown moves. Numbers outside those ranges still tokenize (by BPE).
    ``isolate_numbers`` makes every run of digits a pre-token of its own, so a number is the same token
    wherever it stands (" 36" is " " + "36"): copying a value the model never saw in that position --
    a held-out target from the question into a check -- is then an identity copy. (With " 36" and "36"
    as two tokens, a demo model copied held-out targets right into its first check in 0 of 80 problems
    after SFT, writing the nearest training target, while its CPT checkpoint had 80 of 80.)
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if isolate_numbers:
        from tokenizers import Regex

        byte_level = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"[0-9]+"), behavior="isolated"), byte_level])
    tk.pre_tokenizer = byte_level
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(CHAT_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(texts, trainer=trainer)
    if number_tokens or spaced_number_tokens:
        # whole pre-tokens found in the vocabulary skip the merges (ignore_merges), so adding the
        # number strings to the vocabulary is enough; "\u0120" is byte-level BPE's space
        spec = json.loads(tk.to_str())
        vocab = spec["model"]["vocab"]
        for s in [str(n) for n in range(number_tokens)] + ["\u0120" + str(n) for n in range(spaced_number_tokens)]:
            vocab.setdefault(s, len(vocab))
        spec["model"]["ignore_merges"] = True
        tk = Tokenizer.from_str(json.dumps(spec))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    if extend_with_reasoning:
        extend_tokenizer(tok)
    return tok


def tokenizer_from_tiktoken(path: str | Path, pattern: str, special_tokens: list[str] | None = None):
    """Convert a tiktoken rank file (e.g. Qwen's ``qwen.tiktoken``) into a fast HF tokenizer, offline.

    Ids equal the ranks; ``special_tokens`` are appended in order after the last rank, as the
    model family defines them (Qwen2.5: ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``, ...).
    """
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"tiktoken file {str(p)!r} does not exist")
    tok = PreTrainedTokenizerFast(tokenizer_object=TikTokenConverter(vocab_file=str(p), pattern=pattern).converted())
    if special_tokens:
        tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in special_tokens], special_tokens=True)
    return tok
