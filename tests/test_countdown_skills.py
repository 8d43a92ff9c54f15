"""Teacher-forced skill accuracy: which tokens test which skill, and the counting, on a model whose
predictions are known exactly (an oracle that reads the next token, optionally wrong on one skill)."""

from __future__ import annotations

import pytest

from steiner.countdown.skills import SKILLS, measure_skills, search_text, skill_spans

PROBLEM = {"question": "Using the numbers 8, 4, 7, make 39. Use + - * / and each number at most once.",
           "numbers": [8, 4, 7], "target": 39}


@pytest.fixture(scope="module")
def number_tokenizer():
    from conftest import CORPUS
    from steiner.tokenizer import train_tokenizer

    return train_tokenizer(CORPUS, vocab_size=400, number_tokens=200, spaced_number_tokens=100)


def test_skill_spans_pick_the_tested_values():
    text = ("<|reasoning_step_name_start|>Back to step 0: 8*4<|reasoning_step_name_end|>"
            "<|reasoning_step_thought_start|>8*4=32. 32,7: 32+7=39 (39? yes)<|reasoning_step_thought_end|>"
            "<|reasoning_step_summary_start|>8*4=32; remaining: 32,7<|reasoning_step_summary_end|>"
            "<|reasoning_step_reflection_start|>32+7=39 reaches 39: (8 * 4) + 7.<|reasoning_step_reflection_end|>"
            "<|reasoning_step_end|><|reasoning_end|>(8 * 4) + 7<|im_end|>")
    got = [(text[a:b], skill) for a, b, skill in skill_spans(text)]
    assert got == [("8*4", "move"), ("32", "arithmetic"), ("32", "state"), ("7", "state"), ("39", "arithmetic"),
                   ("39", "target_check"), ("yes", "verdict"), ("32", "state"),
                   ("7", "state"), ("39", "target_reflection"), ("(8 * 4) + 7", "answer"),
                   ("(8 * 4) + 7", "answer")]


class Oracle:
    """Predicts the true next token, except where that token is in ``wrong_ids`` (then token 0)."""

    def __init__(self, wrong_ids: set[int] = frozenset()) -> None:
        self.wrong_ids = wrong_ids
        self.vocab = 0

    def eval(self) -> None:
        pass

    def __call__(self, input_ids):
        import torch

        ids = input_ids[0].tolist()
        logits = torch.zeros(1, len(ids), self.vocab)
        for t in range(len(ids) - 1):
            logits[0, t, 0 if ids[t + 1] in self.wrong_ids else ids[t + 1]] = 1.0
        return type("Out", (), {"logits": logits})()


def test_measure_skills_counts_each_skill_and_isolates_a_failing_one(number_tokenizer):
    tok = number_tokenizer
    oracle = Oracle()
    oracle.vocab = len(tok)
    perfect = measure_skills(oracle, tok, [PROBLEM])
    assert all(perfect[k] == 1.0 for k in SKILLS)
    text = search_text(tok, PROBLEM)
    # the reference search of 8, 4, 7 -> 39 tries 8+4 first (a dead end: "No result is 39."), ...
    assert "No result is 39." in text and "reaches 39: (8 * 4) + 7." in text
    assert perfect["tokens"]["target_reflection"] == text.count("is 39.") + text.count("reaches 39:")
    assert perfect["tokens"]["target_check"] == text.count("(39?")
    # a model that never writes " 39" (the spaced token, used only after words) fails reflections only
    spaced = tok(" 39", add_special_tokens=False)["input_ids"]
    assert len(spaced) == 1
    bad = Oracle({spaced[0]})
    bad.vocab = len(tok)
    res = measure_skills(bad, tok, [PROBLEM])
    assert res["target_reflection"] == 0.0
    assert res["target_check"] == 1.0 and res["arithmetic"] == 1.0 and res["verdict"] == 1.0
    assert res["move"] == 1.0 and res["answer"] == 1.0
