"""The local backend end to end on an untrained tiny model: reports, counts, the sample cache, the sweep, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steiner.eval.backends import GenSettings, LocalBackend, Request
from steiner.eval.runner import EvalConfig, load_samples, main
from steiner.eval.sweep import SweepConfig, parse_grid
from steiner.eval.sweep import main as sweep_main


class CountingBackend(LocalBackend):
    """The real local backend, remembering which samples it was asked to generate."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.asked: list[tuple[str, int]] = []
        self.messages: list[list[dict]] = []

    def run(self, requests: list[Request], settings: GenSettings, on_output) -> None:
        self.asked += [(r.question_id, r.sample) for r in requests]
        self.messages += [r.messages for r in requests]
        super().run(requests, settings, on_output)


@pytest.fixture(scope="module")
def backend(tiny_model_dir) -> CountingBackend:
    return CountingBackend(tiny_model_dir, device="cpu", batch_size=8)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_eval_writes_reports_and_resumes(tmp_path: Path, tiny_model_dir, backend: CountingBackend) -> None:
    out = tmp_path / "eval"
    cfg = EvalConfig(task="mc_sample", model=str(tiny_model_dir), n=3, limit=4, max_new_tokens=40, min_steps=1,
                     max_steps=2, format_strict=True, temperature=1.0, out=str(out))
    backend.asked.clear()
    report = main(cfg, backend=backend)
    assert len(backend.asked) == 12
    samples = lines(out / "samples.jsonl")
    assert len(samples) == 12
    assert {(s["question_id"], s["sample"]) for s in samples} == {(f"mc-{i}", j) for i in range(1, 5) for j in range(3)}
    for s in samples:
        assert s["task"] == "mc_sample" and s["settings"]["max_steps"] == 2 and not s["failed"]
        assert s["gold"] in "ABCD" and isinstance(s["correct"], bool) and s["reason"]
        assert s["completion_tokens"] <= 40 and s["reasoning_tokens"] <= s["completion_tokens"]
        assert s["text"].startswith("<|reasoning_start|>")  # the format processor opens the reasoning
        assert s["num_steps"] <= 2
    m = report["metrics"]
    assert m["num_questions"] == 4 and m["num_samples"] == 12 and m["n"] == 3 and m["num_failed"] == 0
    assert 0.0 <= m["pass@1"] <= m["pass@2"] <= m["pass@3"] <= 1.0
    assert m["pass@1"] == pytest.approx(sum(s["correct"] for s in samples) / 12)
    assert m["mean_reasoning_tokens"] > 0
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["metrics"] == m and on_disk["n"] == 3 and len(on_disk["per_question"]) == 4
    md = (out / "report.md").read_text()
    assert "# Evaluation: mc_sample" in md and "| pass@1 |" in md and "| mc-4 |" in md
    assert "<h1>Evaluation: mc_sample</h1>" in (out / "report.html").read_text()

    # an interrupted run: the last three samples are lost and the last line is half written
    kept = (out / "samples.jsonl").read_text().splitlines()[:9]
    (out / "samples.jsonl").write_text("\n".join(kept) + "\n" + '{"task": "mc_sample", "questi')
    backend.asked.clear()
    again = main(cfg, backend=backend)
    lost = {(s["question_id"], s["sample"]) for s in samples[9:]}
    assert sorted(backend.asked) == sorted(lost)  # only the missing samples are generated
    assert len(load_samples(out / "samples.jsonl")) == 12
    assert again["metrics"]["num_samples"] == 12
    kept_texts = {(s["question_id"], s["sample"]): s["text"] for s in map(json.loads, kept)}
    cached = {(s["question_id"], s["sample"]): s["text"] for s in load_samples(out / "samples.jsonl").values()}
    assert all(cached[k] == v for k, v in kept_texts.items())

    # a complete cache generates nothing; other settings are new samples in the same file
    backend.asked.clear()
    main(cfg, backend=backend)
    assert backend.asked == []
    main(EvalConfig(**{**cfg.__dict__, "n": 1, "max_steps": 1}), backend=backend)
    assert len(backend.asked) == 4 and len(load_samples(out / "samples.jsonl")) == 16


def test_a_system_message_is_sent_and_keys_its_own_samples(tmp_path: Path, tiny_model_dir,
                                                            backend: CountingBackend) -> None:
    out = tmp_path / "eval"
    base = dict(task="mc_sample", model=str(tiny_model_dir), n=1, limit=2, max_new_tokens=24, min_steps=2,
                format_strict=True, out=str(out))
    backend.asked.clear()
    main(EvalConfig(**base), backend=backend)
    assert [m[0]["role"] for m in backend.messages[-2:]] == ["user", "user"]
    # the budget stated: the same settings with a system message are other samples, not the cached ones
    backend.asked.clear()
    report = main(EvalConfig(**base, state_min_steps=True), backend=backend)
    assert len(backend.asked) == 2
    assert [m[0] for m in backend.messages[-2:]] == [{"role": "system", "content": "Take at least 2 steps."}] * 2
    assert len(load_samples(out / "samples.jsonl")) == 4
    assert report["settings_key"].startswith(EvalConfig(**base).settings().key() + "-")
    # a system prompt of the user's comes first; without min_steps nothing is stated
    both = EvalConfig(**base, state_min_steps=True, system_prompt="Be brief.")
    assert both.system_message() == "Be brief.\nTake at least 2 steps."
    assert EvalConfig(**{**base, "min_steps": 0}, state_min_steps=True).system_message() is None
    backend.asked.clear()
    main(EvalConfig(**base, state_min_steps=True), backend=backend)
    assert backend.asked == []  # and they are cached under their own key


def test_sweep_writes_table_and_plots(tmp_path: Path, tiny_model_dir, backend: CountingBackend) -> None:
    out = tmp_path / "sweep"
    cfg = SweepConfig(task="mc_sample", model=str(tiny_model_dir), n=2, limit=2, max_new_tokens=48,
                      grid="0:1,1:2,2:none", temperature=1.0, out=str(out))
    report = sweep_main(cfg, backend=backend)
    assert [(c["min_steps"], c["max_steps"]) for c in report["cells"]] == [(0, 1), (1, 2), (2, None)]
    assert all(c["num_samples"] == 4 for c in report["cells"])
    assert len({c["settings_key"] for c in report["cells"]}) == 3
    assert len(load_samples(out / "samples.jsonl")) == 12
    for name in ("report.md", "report.json", "report.html", "accuracy_vs_tokens.png", "accuracy_vs_max_steps.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "accuracy_vs_tokens.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    assert "| 0:1 |" in md and "| 2:inf | 2 | none |" in md and "![accuracy_vs_tokens](accuracy_vs_tokens.png)" in md
    assert json.loads((out / "report.json").read_text())["cells"][1]["cell"] == "1:2"


def test_sweep_grid_parsing() -> None:
    assert parse_grid("0:4, 2:6,4:none") == [(0, 4), (2, 6), (4, None)]
    cfg = SweepConfig(task="mc_sample", model="m", min_steps="0,2", max_steps="2,8,none")
    assert cfg.cells() == [(0, 2), (0, 8), (0, None), (2, 2), (2, 8), (2, None)]
    assert cfg.cell_config(2, 8).max_steps == 8 and isinstance(cfg.cell_config(2, 8), EvalConfig)
    from steiner.config import ConfigError

    with pytest.raises(ConfigError, match="grid: cell '3' is not MIN:MAX"):
        SweepConfig(task="mc_sample", grid="3")
    with pytest.raises(ConfigError, match="min_steps <= max_steps"):
        SweepConfig(task="mc_sample", grid="5:2")
    with pytest.raises(ConfigError, match="'x' is not an integer"):
        SweepConfig(task="mc_sample", max_steps="x")


def test_cli_eval_countdown(tmp_path: Path, tiny_model_dir) -> None:
    from steiner.cli import main as cli
    from steiner.countdown import generate_problems

    data = tmp_path / "countdown.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in generate_problems(30, seed=1, test_fraction=0.5)))
    out = tmp_path / "cd"
    rc = cli(["eval", "--task", "countdown", "--data", str(data), "--model", str(tiny_model_dir), "--n", "2",
              "--limit", "3", "--max-new-tokens", "12", "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "countdown" and report["answer_type"] == "countdown"
    assert report["metrics"]["num_samples"] == 6 and report["metrics"]["maj@2"] == 0.0
    # bad input surfaces as a clear CLI error, not a traceback
    assert cli(["eval", "--task", "mc_sample", "--n", "1", "--out", str(out)]) == 2
    assert cli(["eval", "--data", str(tmp_path / "nope.jsonl"), "--model", str(tiny_model_dir)]) == 2
