"""Synthesis end to end with a strong-model-shaped teacher: a loopback OpenAI-compatible server replays
the replies shipped in tests/fixtures/strong_teacher (long, LaTeX with single backslashes, think blocks,
fences, null reflections, "step 1"), through the real `openai` client and the real pipeline.
The fixture README lists what each question exercises in the answer checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steiner.synth.pipeline import SynthConfig, main
from steiner.synth.prompts import language_of
from test_synth_llm_teacher import ChatServer

FIX = Path(__file__).parent / "fixtures" / "strong_teacher"
QUESTIONS = [json.loads(x) for x in (FIX / "questions.jsonl").read_text().splitlines() if x.strip()]


def replay(body: dict) -> str:
    """The fixture reply for the call and question of a chat request."""
    turn = body["messages"][-1]["content"].split("Now your turn.", 1)[-1]
    kind = "reveal" if "Correct answer:" in turn else "reference" if "\nAnswer:" in turn else "forward"
    (q,) = [q for q in QUESTIONS if f"Question: {q['question']}\n" in turn]
    return (FIX / f"{q['id']}.{kind}.txt").read_text(encoding="utf-8")


@pytest.fixture
def strong_server():
    srv = ChatServer(reply=replay)
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory, tiny_tokenizer):
    d = tmp_path_factory.mktemp("tok")
    tiny_tokenizer.save_pretrained(d)
    return str(d)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def test_strong_teacher_replies_become_checked_paths(strong_server, tmp_path, tok_dir):
    out = tmp_path / "synth"
    cfg = SynthConfig(out=str(out), questions=str(FIX / "questions.jsonl"), teacher="openai",
                      base_urls=[strong_server.url], model="strong-replay", cuts=1, attempts=1, forward_steps=2,
                      cluster="key", tokenizer=tok_dir, progress=False, concurrency=4, timeout=20, seed=1)
    stats = main(cfg)
    # every request was JSON-Schema structured output, every reply parsed on the first try
    assert strong_server.count == 15 and stats["teacher_stats"]["malformed"] == 0
    assert {b["response_format"]["type"] for b in strong_server.bodies} == {"json_schema"}
    assert all(b["max_tokens"] == 4096 and b["temperature"] == 0.7 for b in strong_server.bodies)
    assert not (out / "rejects_teacher.jsonl").exists()
    # the answer checks, one outcome each as the fixture README says
    assert stats["verification"]["outcomes"] == {
        "reference_ok": 4, "cites_answer": 1, "backtrack_verified": 1, "backtrack_from_right": 1,
        "backtrack_unverifiable": 1, "approved": 1, "approved_wrong": 1}
    rejects = {(r["question_id"], r["kind"]): r for r in _jsonl(out / "rejects_verify.jsonl")}
    assert set(rejects) == {("mc", "reference"), ("phys", "truncation"), ("alg", "truncation")}
    assert rejects[("mc", "reference")]["detail"] == "step 2 thought: 'the given answer'"
    assert rejects[("alg", "truncation")]["reason"] == "approved_wrong"
    assert "'x = 3' is wrong" in rejects[("alg", "truncation")]["detail"]
    dags = {d["question_id"]: d for d in _jsonl(out / "dags.jsonl")}
    assert dags["zh"]["unverified_backtracks"] == [[dags["zh"]["record_ids"][1][0], 0]]
    assert dags["prob"]["unverified_backtracks"] == [] and len(dags["prob"]["record_ids"]) == 2
    # LaTeX survived intact; no think block, form feed or tab leaked into the data
    paths = _jsonl(out / "paths.jsonl")
    text = json.dumps(paths, ensure_ascii=False)
    assert "<think>" not in text and "\\f" not in text.replace("\\\\f", "") and "\\t" not in text.replace("\\\\t", "")
    ref = {p["question_id"]: p for p in paths if p["source"] == "reference"}
    assert set(ref) == {"prob", "phys", "zh", "alg"}  # mc's reference cited the answer
    assert ref["prob"]["steps"][0]["thought"].endswith("number $6 \\times 6 = 36$, each with probability $\\frac{1}{36}$.")
    assert ref["prob"]["final_answer"] == "\\frac{1}{6}"
    assert "$E = h\\nu$, where $\\nu$ is" in ref["phys"]["steps"][0]["thought"]
    assert ref["phys"]["steps"][0]["reflection"] == ""  # "reflection": null
    assert any("\\sqrt" in s["thought"] or "\\le" in s["thought"] for s in ref["prob"]["steps"])
    # the backtrack of the checked wrong attempt is in the data, resumed from "step 1"
    prob = [p for p in paths if p["question_id"] == "prob" and p["num_backtracks"]]
    assert prob and all(p["final_answer"] in ("1/6", "\\frac{1}{6}") for p in prob)
    assert {p["question_id"] for p in paths} == {"prob", "phys", "zh", "mc", "alg"}
    # steps in the question's language: the Chinese question's paths reason in Chinese
    lang = stats["language"]
    assert lang["by_question_language"]["zh"]["in_question_language"] == 1.0
    assert lang["steps_in_question_language"] == 1.0 and lang["by_question_language"]["latin"]["paths"] >= 4
    zh_steps = [s for p in paths if p["question_id"] == "zh" for s in p["steps"]]
    assert zh_steps and all(language_of(s["thought"]) == "zh" for s in zh_steps)
    # a rerun is free: every reply comes from the cache
    main(cfg)
    assert strong_server.count == 15


def test_chinese_questions_are_asked_for_chinese_steps(strong_server, tmp_path):
    import asyncio

    from steiner.synth.llm_teacher import OpenAITeacher
    from steiner.synth.teacher import Question

    q = Question.from_record(QUESTIONS[2])
    t = OpenAITeacher([strong_server.url], "strong-replay", timeout=20)
    steps, answer = asyncio.run(t.reference(q))
    system = strong_server.bodies[0]["messages"][0]["content"]
    assert "language of the question" in system and "Chinese" in system
    assert answer == "40" and steps[1].summary == "面积是 40 平方厘米。"
