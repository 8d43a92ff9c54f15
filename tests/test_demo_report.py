"""The demo's report from a small hand-made summary: every image it shows loads in a real browser."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from steiner.demo.report import write_report
from steiner.report import Series, plot


def _metrics(p: float) -> dict:
    return {"pass@1": p, "maj@2": p + 0.1, "format_valid": 1.0, "mean_reasoning_tokens": 40.0, "mean_steps": 3.0,
            "mean_backtracks": 0.5, "num_questions": 6}


def _fake_run(root: Path) -> dict:
    """The folders a demo run leaves (plots included) and its summary, with made-up figures."""
    for png in ("synth/reasoning_tokens.png", "sweep/accuracy_vs_tokens.png", "sweep/accuracy_vs_max_steps.png",
                "probe/probe.png"):
        plot(root / png, [Series([1, 2, 3], [0.1, 0.2, 0.3])], title=png)
    cells = [{"cell": f"0:{m}", "min_steps": 0, "max_steps": m, **_metrics(0.1 * (i + 1))}
             for i, m in enumerate([1, 2, None])]
    results = {
        "synth": {"problems": 60, "paths": 200},
        "base": {"params": 12345, "vocab": 314, "model": {"hidden_size": 32}},
        "cpt": {"global_step": 5, "train_loss": 3.2}, "sft": {"global_step": 7, "train_loss": 1.1},
        "eval_sft": _metrics(0.2), "rl_step": {"global_step": 1}, "eval_rl_step": _metrics(0.3),
        # the sweep stage reports its plots by file name, relative to its own folder
        "sweep": {"cells": cells, "plots": ["accuracy_vs_tokens.png", "accuracy_vs_max_steps.png"]},
        "multiturn": {"alone": 0.5, "follow_up": 0.4, "difference": -0.1, "questions": 6, "samples": 2},
        "probe": {"example": {"question": "q", "content": "a"}, "fit": {"slope": 0.01, "intercept": 0.1, "r2": 0.99,
                                                                        "exponent": 1.0, "verdict": "linear"}},
        "study_a_sft_optimal_free": _metrics(0.1), "study_a_sft_optimal_bounded": _metrics(0.15),
    }
    return {"config": {"out": str(root)}, "versions": {"python": "3"}, "wall_seconds": 90.0,
            "hardware": {"cpu": "test CPU", "cpu_count": 2, "memory_gib": 4.0, "gpu": None},
            "stages": [{"name": n, "seconds": 1.0, "skipped": False, "config": {}, "result": r}
                       for n, r in results.items()]}


def _images(html: str) -> list[str]:
    return re.findall(r'<img alt="[^"]*" src="([^"]+)"', html)


def test_every_report_image_is_a_file_next_to_the_report(tmp_path):
    page = write_report(tmp_path, _fake_run(tmp_path)).read_text()
    srcs = _images(page)
    assert sorted(srcs) == sorted(["synth/reasoning_tokens.png", "sweep_scaling.png", "sweep/accuracy_vs_tokens.png",
                                   "sweep/accuracy_vs_max_steps.png", "probe/probe.png"])
    assert all((tmp_path / s).is_file() for s in srcs)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _natural_widths(page: Path, profile: Path) -> dict[str, int]:
    """Open ``page`` in headless Chromium; the natural width of each of its images, by src."""
    probe = ("<script>window.addEventListener('load', () => { const p = document.createElement('pre');"
             " p.id = 'naturalwidths'; p.textContent = JSON.stringify([...document.images].map("
             "i => [i.getAttribute('src'), i.naturalWidth])); document.body.appendChild(p); });</script>")
    check = page.with_name("check.html")  # next to the page, so relative sources resolve the same
    check.write_text(page.read_text().replace("</body>", probe + "</body>"))
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
         f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", check.as_uri()],
        capture_output=True, text=True, timeout=120, check=True).stdout
    m = re.search(r'<pre id="naturalwidths">(.*?)</pre>', dom)
    assert m, "the page never finished loading"
    return dict(json.loads(html.unescape(m.group(1))))


@pytest.mark.skipif(CHROMIUM is None, reason="needs the chromium browser (Debian package 'chromium')")
def test_every_report_image_loads_in_headless_chromium(tmp_path):
    page = write_report(tmp_path, _fake_run(tmp_path))
    widths = _natural_widths(page, tmp_path / "profile")
    assert len(widths) == 5
    assert all(w > 0 for w in widths.values()), widths
    # the check is real: a missing image has natural width 0
    (tmp_path / "probe" / "probe.png").unlink()
    widths = _natural_widths(page, tmp_path / "profile")
    assert widths["probe/probe.png"] == 0 and widths["sweep_scaling.png"] > 0


def test_the_model_section_names_a_pretrained_base_or_a_config(tmp_path):
    run = _fake_run(tmp_path)
    write_report(tmp_path, run)
    assert "A Qwen2-architecture model built from a config: 12,345 parameters" in (tmp_path / "report.md").read_text()
    base = next(s for s in run["stages"] if s["name"] == "base")
    base["result"]["base_model"] = "/opt/bases/countdown"
    write_report(tmp_path, run)
    md = (tmp_path / "report.md").read_text()
    assert "The pretrained base model `/opt/bases/countdown`: 12,345 parameters" in md and "from a config" not in md
