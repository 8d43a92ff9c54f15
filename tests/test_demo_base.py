"""The demo's pretrained-base path (`--base-model`) and the built-in base model it ships."""

from __future__ import annotations

import random

import pytest


def _plain_base(path, dtype="float16"):
    """A tiny base model saved in fp16 whose tokenizer has no reasoning tokens (as a user's base)."""
    import torch

    from steiner.modeling import TinyModelConfig, build_model
    from steiner.tokenizer import train_tokenizer

    texts = ["make 34. 72+6=78 (34? no) 45-11=34 (34? yes)", "Using the numbers 4, 8, 7, make 39."] * 20
    tok = train_tokenizer(texts, vocab_size=300, number_tokens=200, isolate_numbers=True, extend_with_reasoning=False)
    model = build_model(tok, TinyModelConfig(hidden_size=32, num_layers=1, tie_word_embeddings=True))
    model.to(getattr(torch, dtype)).save_pretrained(path)
    tok.save_pretrained(path)
    return tok, model


def _stage(base_model: str):
    from steiner.demo.stages import BaseStage

    return BaseStage(corpus=[], cpt_docs=3, drill_state_share=0.0, seed=0, vocab_size=300, number_range=[1, 12],
                     target_range=[10, 50], number_tokens=200, base_model=base_model)


def test_a_plain_fp16_base_is_extended_with_the_reasoning_tokens_and_kept_as_fp32(tmp_path):
    import torch

    from steiner.demo.stages import run_base
    from steiner.format import SPECIAL_TOKENS
    from steiner.tokenizer import load_model, load_tokenizer

    tok, model = _plain_base(tmp_path / "base")
    assert not any(t in tok.get_vocab() for t in SPECIAL_TOKENS)
    out = tmp_path / "stage"
    (out / "model").mkdir(parents=True)
    info = run_base(_stage(str(tmp_path / "base")), out)
    got_tok, got = load_tokenizer(out / "model"), load_model(out / "model")
    assert all(t in got_tok.get_vocab() for t in SPECIAL_TOKENS)
    assert got.dtype == torch.float32 and info["vocab"] == len(got_tok)
    from steiner.tokenizer import chat_template

    assert got_tok.chat_template == chat_template()  # the project's template, not one saved with the base
    # the base's own rows are the base's weights (exactly: fp16 -> fp32 is lossless), its words keep their ids
    old = model.get_input_embeddings().weight.float()
    assert torch.equal(got.get_input_embeddings().weight[: old.shape[0]], old)
    assert got_tok("make 34. 45-11=34")["input_ids"] == tok("make 34. 45-11=34")["input_ids"]
    assert got.get_input_embeddings().weight.shape[0] >= len(got_tok)
    # the drill text for CPT is written as without a base
    assert (out / "arithmetic.txt").read_text().count("make ") == 3


def test_a_missing_base_model_is_named(tmp_path):
    from steiner.demo import DemoConfig
    from steiner.demo.stages import base

    with pytest.raises(FileNotFoundError, match="nowhere.*config.json"):
        base(DemoConfig(base_model=str(tmp_path / "nowhere")), tmp_path)


def test_a_changed_base_model_changes_the_base_stage_key(tmp_path):
    from steiner.demo import DemoConfig
    from steiner.demo.stages import base

    _plain_base(tmp_path / "b")
    cfg = DemoConfig(base_model=str(tmp_path / "b"))
    first = base(cfg, tmp_path).base_model_digest
    assert first and base(cfg, tmp_path).base_model_digest == first
    _plain_base(tmp_path / "b", dtype="float32")
    assert base(cfg, tmp_path).base_model_digest != first


def test_the_full_and_quick_runs_start_from_the_builtin_base():
    from steiner.demo import DemoConfig, resolve

    assert DemoConfig().base_model == "builtin" and resolve(DemoConfig(quick=True)).base_model == "builtin"
    assert resolve(DemoConfig(quick=True, base_model=""), {"base_model"}).base_model == ""  # '' builds one


def test_the_builtin_base_knows_the_drill_arithmetic_and_no_reasoning():
    """The shipped base computes held-out-free facts of the domain (teacher-forced, greedy next token):
    what the quick demo relies on it for. It was trained on drill text only."""
    import torch

    from steiner.countdown.text import arithmetic_facts
    from steiner.demo.basemodel import builtin_path
    from steiner.tokenizer import load_model, load_tokenizer

    path = builtin_path()
    tok, model = load_tokenizer(path), load_model(path, dtype=torch.float32).eval()
    facts = random.Random(0).sample(arithmetic_facts((1, 12)), 200)
    right = 0
    for a, o, b, c in facts:
        t = random.Random(a * 1000 + b).randint(10, 50)
        ids = tok(f"make {t}. {a}{o}{b}=", return_tensors="pt")["input_ids"]
        with torch.no_grad():
            nxt = model(ids).logits[0, -1].argmax().item()
        right += tok.decode([nxt]) == str(c)
    assert right >= 180, f"{right}/200 facts right"


def test_the_builtin_base_copies_a_state_and_a_held_out_target():
    """The shipped base's other skill the quick demo relies on (docs/demo.md session 33): after a state
    drill header it copies the three numbers into the first move's state (greedy), and a held-out target
    -- never a training problem's -- into a check (teacher-forced). The fact-drill-only base of session
    31 did neither (0/40, 0/40); its continuation on state drill does both (measured 40/40 and 40/40, docs/demo.md
    session 33)."""
    import torch

    from steiner.countdown.problems import held_out_targets
    from steiner.demo.basemodel import builtin_path
    from steiner.tokenizer import load_model, load_tokenizer

    path = builtin_path()
    tok, model = load_tokenizer(path), load_model(path, dtype=torch.float32).eval()
    rng, held = random.Random(1), sorted(held_out_targets((10, 50)))
    numbers = target = 0
    for i in range(40):
        a, b, c = (rng.randint(1, 12) for _ in range(3))
        t = held[i % len(held)]
        ids = tok(f"{a}, {b}, {c} make {t}. in ", return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=6, do_sample=False)
        numbers += tok.decode(out[0, ids.shape[1]:]).replace(" ", "").startswith(f"{a},{b},{c}:")
        s = a + b
        u, v = max(s, c), min(s, c)
        prefix = f"{a}, {b}, {c} make {t}. in {a},{b},{c}: {max(a, b)}+{min(a, b)}={s}. {u},{v}: {u}+{v}={u + v} ("
        with torch.no_grad():
            nxt = model(tok(prefix, return_tensors="pt")["input_ids"]).logits[0, -1].argmax().item()
        target += tok.decode([nxt]).strip() == str(t)
    assert numbers >= 32 and target >= 32, f"numbers {numbers}/40, held-out target {target}/40"


def test_make_base_pretrains_on_drill_only_for_each_round_and_ships_fp16(tmp_path):
    import json

    import torch
    from safetensors import safe_open

    from steiner.demo.basemodel import BaseModelConfig, main
    from steiner.format import SPECIAL_TOKENS
    from steiner.tokenizer import load_tokenizer

    out = tmp_path / "base"
    info = main(BaseModelConfig(out=str(out), work=str(tmp_path / "work"), problems=30, drill_docs=24, rounds=2,
                                hidden_size=32, num_layers=1))
    with safe_open(out / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert all(t in load_tokenizer(out).get_vocab() for t in SPECIAL_TOKENS)  # CPT extended it
    # two rounds on fresh documents: the second round's drill differs from the first's
    first = (tmp_path / "work" / "base" / "arithmetic.txt").read_text()
    second = (tmp_path / "work" / "drill1.txt").read_text()
    assert first.count("make ") == second.count("make ") == 24 and first != second
    assert len(info["train_loss"]) == 2 and info["tokens"] > 0
    runs = [json.loads((tmp_path / "work" / d / "steiner_train.json").read_text()) for d in ("cpt", "cpt1")]
    assert [r["data"]["reasoning_tokens"] for r in runs] == [0, 0]  # no reasoning paths in a base
    assert runs[1]["config"]["model"] == str(tmp_path / "work" / "cpt")  # round 2 continues round 1
    assert json.loads((out / "steiner_base.json").read_text())["steps"] == info["steps"] > 0

    # a further round continues that base on state drill: no held-out target, the record keeps its history
    import re

    from steiner.countdown.problems import held_out_targets

    out2 = tmp_path / "base2"
    info2 = main(BaseModelConfig(out=str(out2), work=str(tmp_path / "work2"), from_model=str(out), seed=2,
                                 drill_docs=24, rounds=1, state_share=0.5))
    docs = (tmp_path / "work2" / "drill0.txt").read_text().strip().split("\n\n")
    state = [d for d in docs if re.match(r"\d+, \d+, \d+ make \d+\. in ", d)]
    assert len(docs) == 24 and len(state) == 12
    assert all(re.search(r"\? yes", d) is None for d in state
               if int(re.search(r"make (\d+)", d).group(1)) in held_out_targets((10, 50)))
    assert info2["continued_from"] == json.loads(json.dumps(info))
    run = json.loads((tmp_path / "work2" / "cpt" / "steiner_train.json").read_text())
    assert run["config"]["model"] == str(out)
