"""The latency probe: the fit on known shapes, and telling sequential from parallel decoding on our server."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from steiner.config import ConfigError
from steiner.probe import ProbeConfig, ProbeRun, fit, main, plot_runs, run_probe
from test_serve import start_server


def test_fit_reads_known_shapes():
    rng = np.random.default_rng(0)
    x = np.repeat([50, 100, 200, 400, 800, 1600], 4).astype(float)
    noise = rng.normal(0, 0.03, len(x))
    line = fit(list(x), list(0.2 + 0.004 * x + noise), bootstrap=200)
    assert line.verdict.startswith("linear") and line.r2 > 0.99
    assert line.slope == pytest.approx(0.004, rel=0.05) and line.intercept == pytest.approx(0.2, abs=0.05)
    assert abs(line.exponent - 1) < 0.05 and line.exponent_ci_method == "bootstrap"
    root = fit(list(x), list(0.2 + 0.1 * np.sqrt(x) + noise), bootstrap=200)
    assert root.verdict.startswith("sub-linear") and root.exponent_ci[1] < 1
    square = fit(list(x), list(0.2 + 2e-6 * x**2 + noise), bootstrap=200)
    assert square.verdict.startswith("super-linear") and square.quad_ci[0] > 0
    with pytest.raises(ValueError, match="same length"):
        fit([10, 10, 10, 10], [1, 2, 3, 4])


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="max_tokens"):
        ProbeConfig(model=["m"], base_url=["u"], max_tokens=[0])
    with pytest.raises(ConfigError, match="base URLs"):
        ProbeConfig(model=["a", "b", "c"], base_url=["u1", "u2"]).targets()
    cfg = ProbeConfig(model=["a", "b"], base_url=["u"], extra_body="{ignore_eos: true}")
    assert cfg.targets() == [("a", "u"), ("b", "u")] and cfg.extra_body == {"ignore_eos": True}


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    srv = start_server(tiny_model_dir)
    yield srv
    srv.close()


def test_probe_tells_sequential_from_parallel(server, tmp_path):
    """One sequence per request reads linear; n parallel samples per request (all billed, decoded in one
    batch, the width growing faster than the length) read sub-linear. ignore_eos makes every completion
    exactly max_tokens long; the fastest of several shuffled rounds filters out the other processes on a
    busy machine, and rounds are added while a verdict is still inconclusive."""
    common = dict(base_url=[server.base_url], model=["tiny"], extra_body={"ignore_eos": True}, bootstrap=300,
                  pairing="zip", repeats=4, max_repeats=15)
    seq = ProbeConfig(max_tokens=[16, 24, 32, 48, 64, 96, 128], n=[1], **common)
    par = ProbeConfig(max_tokens=[16, 16, 18, 20, 22, 24, 26, 28, 30, 32], n=[1, 2, 3, 4, 6, 8, 12, 16, 24, 32],
                      **common)
    linear = run_probe(seq, "tiny", server.base_url)
    parallel = run_probe(par, "tiny", server.base_url)
    assert not any(s.error for s in linear.samples + parallel.samples)
    assert sorted({s.completion_tokens for s in linear.samples}) == [16, 24, 32, 48, 64, 96, 128]
    assert max(s.completion_tokens for s in parallel.samples) == 32 * 32  # usage counts every sample
    assert linear.fit.verdict == "linear: sequential decoding", linear.fit
    assert parallel.fit.verdict == "sub-linear: parallel search", parallel.fit
    assert parallel.fit.exponent < linear.fit.exponent
    assert linear.overhead_s is not None and linear.fit.exponent_ci_method == "log-log bootstrap"
    png = plot_runs([linear, ProbeRun("tiny-parallel", server.base_url, parallel.samples, parallel.fit)],
                    tmp_path / "both.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_probe_main_streams_and_writes_files(server, tmp_path):
    cfg = ProbeConfig(base_url=[server.base_url], model=["tiny", "tiny"], requests=4, max_tokens=[8, 16, 24, 32],
                      stream=True, bootstrap=0, warmup=0, extra_body={"ignore_eos": True}, out=str(tmp_path))
    summary = main(cfg)
    rows = list(csv.DictReader((tmp_path / "probe.csv").open()))
    assert len(rows) == 8 and all(r["error"] == "" for r in rows)
    assert all(0 < float(r["ttft_s"]) <= float(r["wall_s"]) for r in rows)
    assert all(int(r["reasoning_tokens"]) <= int(r["completion_tokens"]) for r in rows)
    assert {int(r["completion_tokens"]) for r in rows} == {8, 16, 24, 32}
    assert summary["tiny"]["fit"]["exponent_ci_method"] == "log-log t"  # streaming: decode time = wall - ttft
    assert (tmp_path / "probe.png").stat().st_size > 1000 and (tmp_path / "probe.json").exists()


def test_fit_with_overhead_uses_decode_time():
    x = np.array([8, 16, 32, 64, 128, 256, 512, 1024], dtype=float)
    seq = fit(list(x), list(0.05 + 0.001 * x), overhead=0.05, bootstrap=0)
    assert seq.exponent == pytest.approx(1.0, abs=1e-6) and seq.verdict.startswith("linear")
    par = fit(list(x), list(0.05 + 0.004 * x**0.5), overhead=[0.05] * len(x), bootstrap=100)
    assert par.exponent == pytest.approx(0.5, abs=1e-6) and par.verdict.startswith("sub-linear")
    assert par.exponent_ci_method == "log-log bootstrap"


def test_probe_cli_compares_two_models_in_one_plot(server, tmp_path):
    from steiner.cli import main as cli

    rc = cli(["probe", "--base-url", server.base_url, "--model", "tiny", "--model", "tiny", "--max-tokens", "4,8,12,16",
              "--requests", "4", "--warmup", "0", "--bootstrap", "0", "--extra-body", "{ignore_eos: true}",
              "--out", str(tmp_path)])
    assert rc == 0
    rows = list(csv.DictReader((tmp_path / "probe.csv").open()))
    assert len(rows) == 8 and {r["completion_tokens"] for r in rows} == {"4", "8", "12", "16"}
    assert cli(["probe", "--base-url", server.base_url, "--model", "tiny", "--max-tokens", "0"]) == 2
