"""The latency probe (SPEC section 7): does an endpoint decode one sequence, or search in parallel?

Send requests of spread-out lengths, record completion tokens (reasoning included), reasoning tokens
(``usage.completion_tokens_details.reasoning_tokens``), wall time and, when streaming, time to first
token. Fit ``time = a + b * tokens`` (slope, intercept, R^2) and test curvature two ways: a power law
``time = a + c * tokens^k`` with a bootstrap confidence interval on the exponent k, and a quadratic term
with its t-based interval. One sequence decoded token by token costs the same per token: k ~ 1 and a
clean line. Parallel search (several branches decoded at once, all their tokens billed) makes tokens
grow faster than time: k significantly below 1.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from steiner.config import ConfigError, check_range, opt

PROMPTS = [
    "Answer with one number: what is 7 * 8?",
    "Using the numbers 3, 5, 7 and 11 once each with + - * /, reach 24. Show your search.",
    "Explain step by step why the sum of two odd numbers is even.",
    "List the prime numbers below 50 and explain how you checked each one.",
    "Write a detailed plan for solving a Countdown puzzle with six numbers and target 952.",
    "Is 1001 prime? Reason carefully before answering.",
]

# verdict thresholds: an exponent within TOL of 1 is practically linear; R^2 below R2_LINEAR is no clean
# line; an exponent interval wider than CI_WIDTH says too little to call anything linear
TOL = 0.25
R2_LINEAR = 0.9
CI_WIDTH = 1.0


@dataclass
class ProbeConfig:
    """Options of `steiner probe`."""

    base_url: list[str] = opt([], "OpenAI-compatible base URL(s): one for all models, or one per model")
    model: list[str] = opt([], "model name(s) to probe; several share one plot")
    api_key: str | None = opt(None, "API key (default: $OPENAI_API_KEY, else 'none')")
    requests: int | None = opt(None, "timed requests per model (default: one per max_tokens/n pair, at least 12)")
    max_tokens: list[int] = opt([32, 64, 128, 256, 512, 1024], "max_tokens values cycled over, to spread lengths")
    n: list[int] = opt([1], "samples per request (usage counts all samples); crossed with or zipped to max_tokens")
    pairing: Literal["grid", "zip"] = opt(
        "grid", "grid: every (max_tokens, n) pair; zip: the i-th max_tokens with the i-th n (a search that "
        "widens with length)")
    r2_min: float = opt(R2_LINEAR, "R^2 a fit needs to be called linear")
    overhead: Literal["auto", "ttft", "ping", "none"] = opt(
        "auto", "fixed cost taken off each request before fitting the exponent: ttft (time to first token, "
        "streaming), ping (fastest one-token request, one per round), none (fit time = a + c*tokens^k); "
        "auto: ttft when streaming, else ping")
    stream: bool = opt(False, "stream, and record time to first token (stream_options.include_usage)")
    extra_body: dict | str = opt({}, "extra request fields (a mapping; on the command line JSON or YAML), "
                                 "e.g. {ignore_eos: true} or {min_steps: 2}")
    temperature: float | None = opt(None, "sampling temperature sent (None: the endpoint's default)")
    warmup: int = opt(1, "untimed requests before the timed ones")
    repeats: int = opt(1, "send each request this many times (in shuffled rounds) and keep the fastest: "
                       "filters out bursts of CPU contention on a busy machine")
    max_repeats: int = opt(1, "while the verdict is inconclusive, keep adding rounds up to this many")
    bootstrap: int = opt(1000, "bootstrap resamples for the exponent's confidence interval (0: t-based only)")
    seed: int = opt(0, "seed for the request order and the bootstrap")
    timeout: float = opt(600.0, "seconds before one request is given up")
    out: str = opt("probe_out", "folder for probe.csv, probe.json and probe.png")

    def __post_init__(self) -> None:
        if isinstance(self.model, str):
            self.model = [self.model]
        if isinstance(self.base_url, str):
            self.base_url = [self.base_url]
        if isinstance(self.extra_body, str):  # from the command line: JSON or YAML flow mapping
            import yaml

            self.extra_body = yaml.safe_load(self.extra_body) or {}
            if not isinstance(self.extra_body, dict):
                raise ConfigError(f"extra_body must be a mapping, got {self.extra_body!r}")
        check_range("requests", self.requests, lo=4)
        check_range("warmup", self.warmup, lo=0)
        check_range("repeats", self.repeats, lo=1)
        check_range("max_repeats", self.max_repeats, lo=1)
        check_range("bootstrap", self.bootstrap, lo=0)
        for name in ("max_tokens", "n"):
            values = getattr(self, name)
            if not values or any(v < 1 for v in values):
                raise ConfigError(f"{name} must be a non-empty list of positive integers, got {values!r}")
        if self.pairing == "zip" and len(self.n) not in (1, len(self.max_tokens)):
            raise ConfigError(f"pairing zip needs one n or one per max_tokens value ({len(self.max_tokens)}), "
                              f"got {len(self.n)}")

    def targets(self) -> list[tuple[str, str]]:
        """(model, base_url) pairs: models and URLs paired, or one side broadcast."""
        models, urls = self.model, self.base_url
        if not models or not urls:
            raise ConfigError("probe needs --model and --base-url")
        if len(urls) == 1:
            urls = urls * len(models)
        elif len(models) == 1:
            models = models * len(urls)
        if len(models) != len(urls):
            raise ConfigError(f"{len(models)} models but {len(urls)} base URLs: give one URL, or one per model")
        return list(zip(models, urls, strict=True))


@dataclass
class Sample:
    """One timed request."""

    model: str
    base_url: str
    index: int
    prompt: str
    n: int
    max_tokens: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    wall_s: float = 0.0
    ttft_s: float | None = None
    finish_reason: str = ""
    error: str = ""


@dataclass
class Fit:
    """time = intercept + slope * tokens, and the curvature tests."""

    n: int
    slope: float
    intercept: float
    r2: float
    exponent: float
    exponent_ci: tuple[float, float]
    exponent_ci_method: str
    quad: float
    quad_ci: tuple[float, float]
    verdict: str
    reason: str


@dataclass
class ProbeRun:
    """The samples and the fit of one model."""

    model: str
    base_url: str
    samples: list[Sample] = field(default_factory=list)
    fit: Fit | None = None
    overhead_s: float | None = None  # fastest one-token request (overhead "ping")


def _ols(x: Any, y: Any, degree: int) -> tuple[Any, Any, float]:
    """Polynomial least squares: coefficients (constant first), their standard errors, R^2."""
    import numpy as np

    X = np.vander(x, degree + 1, increasing=True)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    dof = max(len(y) - degree - 1, 1)
    sigma2 = float(resid @ resid) / dof
    cov = sigma2 * np.linalg.pinv(X.T @ X)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else 0.0
    return coef, np.sqrt(np.clip(np.diag(cov), 0, None)), r2


def _power_fit(x: Any, y: Any, p0: tuple[float, float, float]) -> tuple[Any, Any]:
    """Fit y = a + c * x^k (x scaled to its median); returns (a, c, k) and their covariance."""
    import numpy as np
    from scipy.optimize import curve_fit

    def f(x: Any, a: float, c: float, k: float) -> Any:
        return a + c * np.power(x, k)

    # a >= 0: no request takes negative time at zero tokens; a free sign lets a negative intercept and a
    # larger exponent mimic a concave curve, which blows up the exponent's interval
    bounds = ([0.0, 0.0, 0.05], [float(np.max(y)) * 2 + 1e-9, np.inf, 5.0])
    p0 = tuple(float(np.clip(v, lo + 1e-9, hi - 1e-9)) for v, lo, hi in zip(p0, *bounds, strict=True))
    return curve_fit(f, x, y, p0=p0, bounds=bounds, maxfev=20000)


def _exponent_power(x: Any, y: Any, b0: float, b1: float, tq: float, bootstrap: int, rng: Any
                    ) -> tuple[float, tuple[float, float], str]:
    """Exponent of y = a + c * x^k, a >= 0, with a bootstrap (or t-based) 95% interval."""
    import numpy as np

    scale = float(np.median(x)) or 1.0
    xs = x / scale
    params, cov = _power_fit(xs, y, (max(b0, 0.0), max(b1 * scale, 1e-6), 1.0))
    k = float(params[2])
    k_se = float(np.sqrt(max(cov[2, 2], 0.0))) if np.isfinite(cov[2, 2]) else float("inf")
    ks = []
    for _ in range(bootstrap):
        idx = rng.integers(0, len(x), len(x))
        if np.ptp(xs[idx]) > 0:
            try:
                ks.append(float(_power_fit(xs[idx], y[idx], tuple(params))[0][2]))
            except (RuntimeError, ValueError):
                continue
    if bootstrap and len(ks) >= max(20, bootstrap // 2):
        return k, (float(np.percentile(ks, 2.5)), float(np.percentile(ks, 97.5))), "bootstrap"
    return k, (k - tq * k_se, k + tq * k_se), "t"


def _exponent_loglog(x: Any, d: Any, bootstrap: int, rng: Any) -> tuple[float, tuple[float, float], str]:
    """Slope of log(decode time) on log(tokens), with a bootstrap (or t-based) 95% interval."""
    import numpy as np
    from scipy import stats

    lx, ly = np.log(x), np.log(d)
    (_, k), se, _ = _ols(lx, ly, 1)
    ks = []
    for _ in range(bootstrap):
        idx = rng.integers(0, len(x), len(x))
        if np.ptp(lx[idx]) > 0:
            ks.append(float(np.polyfit(lx[idx], ly[idx], 1)[0]))
    if bootstrap and len(ks) >= 20:
        return float(k), (float(np.percentile(ks, 2.5)), float(np.percentile(ks, 97.5))), "bootstrap"
    tq = stats.t.ppf(0.975, max(len(x) - 2, 1))
    return float(k), (float(k - tq * se[1]), float(k + tq * se[1])), "t"


def fit(tokens: list[float], times: list[float], *, overhead: float | list[float] | None = None,
        bootstrap: int = 1000, seed: int = 0, r2_min: float = R2_LINEAR) -> Fit:
    """Fit time against tokens and say whether it is linear (sequential) or sub-linear (parallel).

    The line (slope, intercept, R^2) and the quadratic term use the wall times. The exponent k: with
    ``overhead`` (the fixed cost of a request: one number, e.g. the time of one-token requests, or one
    per request, e.g. its time to first token) it is the log-log slope of the decode time
    ``time - overhead`` against tokens, a well-determined two-parameter fit; without it, the exponent of
    ``time = a + c * tokens^k``.
    Verdict: "sub-linear: parallel search" when k is below 1 - TOL and the curvature is significant
    (k's interval lies below 1, or the quadratic term's below 0); "linear: sequential decoding" when
    R^2 >= ``r2_min``, k is within TOL of 1 and its interval is narrower than CI_WIDTH (a fit too noisy
    to say is not called linear); "super-linear" mirrors sub-linear; otherwise "inconclusive".
    """
    import numpy as np
    from scipy import stats

    x = np.asarray(tokens, dtype=float)
    y = np.asarray(times, dtype=float)
    if len(x) < 4:
        raise ValueError(f"fit needs at least 4 samples, got {len(x)}")
    if np.ptp(x) <= 0:
        raise ValueError("all completions have the same length; spread max_tokens to fit a slope")
    (b0, b1), _, r2 = _ols(x, y, 1)
    (_, q1, q2), q_se, _ = _ols(x, y, 2)
    tq = stats.t.ppf(0.975, max(len(x) - 3, 1))
    rng = np.random.default_rng(seed)
    decode = None if overhead is None else y - np.asarray(overhead, dtype=float)
    if decode is not None and (decode > 0).sum() >= 4 and np.ptp(x[decode > 0]) > 0:
        keep = decode > 0
        k, ci, method = _exponent_loglog(x[keep], decode[keep], bootstrap, rng)
        method = f"log-log {method}"
    else:
        k, ci, method = _exponent_power(x, y, float(b0), float(b1), tq, bootstrap, rng)
    quad_ci = (float(q2 - tq * q_se[2]), float(q2 + tq * q_se[2]))
    quad_note = "quadratic term not significant" if quad_ci[0] <= 0 <= quad_ci[1] else (
        f"quadratic term {'negative' if q2 < 0 else 'positive'} and significant")
    where = f"exponent {k:.2f} [{ci[0]:.2f}, {ci[1]:.2f}], R^2 {r2:.3f}, {quad_note}"
    if k < 1 - TOL and (ci[1] < 1 or quad_ci[1] < 0):
        verdict = "sub-linear: parallel search"
    elif k > 1 + TOL and (ci[0] > 1 or quad_ci[0] > 0):
        verdict = "super-linear: per-token cost grows with length"
    elif r2 >= r2_min and abs(k - 1) <= TOL and ci[1] - ci[0] <= CI_WIDTH:
        verdict = "linear: sequential decoding"
    else:
        verdict = "inconclusive"
    return Fit(n=len(x), slope=float(b1), intercept=float(b0), r2=float(r2), exponent=k, exponent_ci=ci,
               exponent_ci_method=method, quad=float(q2), quad_ci=quad_ci, verdict=verdict, reason=where)


def _one(client: Any, cfg: ProbeConfig, s: Sample) -> Sample:
    """Send one request and fill in its measurements."""
    kw: dict[str, Any] = {"model": s.model, "messages": [{"role": "user", "content": s.prompt}],
                          "max_tokens": s.max_tokens, "n": s.n}
    if cfg.temperature is not None:
        kw["temperature"] = cfg.temperature
    if cfg.extra_body:
        kw["extra_body"] = dict(cfg.extra_body)
    t0 = time.perf_counter()
    try:
        if cfg.stream:
            usage, reasons = None, []
            for ch in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw):
                for c in ch.choices:
                    extra = c.delta.model_extra or {}
                    if s.ttft_s is None and (c.delta.content or extra.get("reasoning_content") or extra.get("reasoning")):
                        s.ttft_s = time.perf_counter() - t0
                    if c.finish_reason:
                        reasons.append(c.finish_reason)
                usage = ch.usage or usage
            s.finish_reason = ",".join(sorted(set(reasons)))
        else:
            r = client.chat.completions.create(**kw)
            usage = r.usage
            s.finish_reason = ",".join(sorted({c.finish_reason for c in r.choices}))
        s.wall_s = time.perf_counter() - t0
        if usage is None:
            raise ValueError("the endpoint returned no usage (streaming needs stream_options.include_usage)")
        s.prompt_tokens, s.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        details = usage.completion_tokens_details
        s.reasoning_tokens = int(getattr(details, "reasoning_tokens", 0) or 0) if details else 0
    except Exception as e:  # noqa: BLE001 - one failed request is recorded, not fatal
        s.wall_s = time.perf_counter() - t0
        s.error = f"{type(e).__name__}: {e}"
    return s


def run_probe(cfg: ProbeConfig, model: str, base_url: str, progress: Any = None) -> ProbeRun:
    """Time ``cfg.requests`` requests against one model and fit.

    Each request is sent in ``cfg.repeats`` shuffled rounds (more, up to ``cfg.max_repeats``, while the verdict
    is inconclusive) and its fastest try is kept: the minimum converges on the uncontended cost.
    """
    from openai import OpenAI

    key = cfg.api_key or os.environ.get("OPENAI_API_KEY") or "none"
    client = OpenAI(base_url=base_url, api_key=key, timeout=cfg.timeout, max_retries=0)
    rng = random.Random(cfg.seed)
    if cfg.pairing == "zip":
        grid = list(zip(cfg.max_tokens, cfg.n * len(cfg.max_tokens) if len(cfg.n) == 1 else cfg.n, strict=False))
    else:
        grid = list(itertools.product(cfg.max_tokens, cfg.n))
    wanted = cfg.requests or max(len(grid), 12)
    plan: list[tuple[int, int]] = []
    while len(plan) < wanted:
        block = grid[:]
        rng.shuffle(block)
        plan += block
    plan = plan[:wanted]
    for w in range(cfg.warmup):
        _one(client, cfg, Sample(model, base_url, -1 - w, PROMPTS[0], 1, min(cfg.max_tokens)))
    run = ProbeRun(model, base_url)
    rounds = max(cfg.repeats, cfg.max_repeats)
    task = progress.add_task(f"probe {model}", total=len(plan) * cfg.repeats) if progress is not None else None
    tries: list[list[Sample]] = [[] for _ in plan]
    verdicts: list[str] = []
    mode = cfg.overhead if cfg.overhead != "auto" else ("ttft" if cfg.stream else "ping")
    for r in range(rounds):  # rounds in shuffled order, so a burst of contention hits different requests
        if mode == "ping":
            ping = _one(client, cfg, Sample(model, base_url, -1, PROMPTS[0], 1, 1))
            if not ping.error:
                run.overhead_s = min(ping.wall_s, run.overhead_s or ping.wall_s)
        order = list(range(len(plan)))
        if r > 0:
            rng.shuffle(order)
        if r >= cfg.repeats and progress is not None:
            progress.update(task, total=len(plan) * (r + 1))
        for i in order:
            mt, n = plan[i]
            tries[i].append(_one(client, cfg, Sample(model, base_url, i, PROMPTS[i % len(PROMPTS)], n, mt)))
            if progress is not None:
                progress.advance(task)
        run.samples = [min([s for s in ts if not s.error] or ts, key=lambda s: s.wall_s) for ts in tries]
        run.fit = _fit_run(run, cfg, mode)
        verdicts.append(run.fit.verdict if run.fit is not None else "inconclusive")
        # stop once the verdict is conclusive and the same two rounds running (one round can be a fluke)
        if r + 1 >= cfg.repeats and verdicts[-1] != "inconclusive" and (r + 1 == cfg.repeats == 1 or
                                                                      verdicts[-2:] == [verdicts[-1]] * 2):
            break
    return run


def _fit_run(run: ProbeRun, cfg: ProbeConfig, mode: str) -> Fit | None:
    ok = [s for s in run.samples if not s.error and s.completion_tokens > 0]
    if len(ok) < 4 or len({s.completion_tokens for s in ok}) < 2:
        return None
    overhead: float | list[float] | None = None
    if mode == "ttft" and all(s.ttft_s is not None for s in ok):
        overhead = [s.ttft_s for s in ok]
    elif mode == "ping":
        overhead = run.overhead_s
    return fit([s.completion_tokens for s in ok], [s.wall_s for s in ok], overhead=overhead,
               bootstrap=cfg.bootstrap, seed=cfg.seed, r2_min=cfg.r2_min)


def write_csv(runs: list[ProbeRun], path: str | Path) -> Path:
    """All samples of all runs, one row per request."""
    path = Path(path)
    names = list(Sample.__dataclass_fields__)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=names)
        w.writeheader()
        for run in runs:
            for s in run.samples:
                w.writerow(asdict(s))
    return path


def plot_runs(runs: list[ProbeRun], path: str | Path, *, title: str = "latency probe") -> Path:
    """Wall time against completion tokens, one colour per model, with the line and power-law fits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for color, run in zip(itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"]), runs):
        ok = [s for s in run.samples if not s.error]
        x = np.array([s.completion_tokens for s in ok], dtype=float)
        y = np.array([s.wall_s for s in ok], dtype=float)
        label = run.model
        if run.fit is not None:
            ft = run.fit
            label = (f"{run.model}: t = {ft.intercept:.3f} + {ft.slope * 1000:.3f} ms/tok (R² {ft.r2:.3f}); "
                     f"k = {ft.exponent:.2f} [{ft.exponent_ci[0]:.2f}, {ft.exponent_ci[1]:.2f}]\n{ft.verdict}")
            grid = np.linspace(0, max(x.max(), 1), 100)
            ax.plot(grid, ft.intercept + ft.slope * grid, color=color, lw=1.5)
        ax.scatter(x, y, color=color, s=18, alpha=0.8, label=label)
    ax.set_xlabel("completion tokens (reasoning included)")
    ax.set_ylabel("wall time per request (s)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(cfg: ProbeConfig) -> dict[str, Any]:
    """`steiner probe`: probe every model, write probe.csv / probe.json / probe.png, print a table."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    targets = cfg.targets()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with Progress(transient=True) as progress:
        runs = [run_probe(cfg, m, u, progress) for m, u in targets]
    write_csv(runs, out / "probe.csv")
    plot_runs(runs, out / "probe.png")
    summary = {r.model: {"base_url": r.base_url, "errors": sum(bool(s.error) for s in r.samples),
                         "fit": asdict(r.fit) if r.fit else None} for r in runs}
    (out / "probe.json").write_text(json.dumps(summary, indent=2))
    table = Table(title=f"latency probe ({out})")
    for col in ("model", "requests", "errors", "ms/token", "intercept s", "R^2", "exponent [95% CI]", "verdict"):
        table.add_column(col)
    for r in runs:
        f = r.fit
        table.add_row(r.model, str(len(r.samples)), str(summary[r.model]["errors"]),
                      f"{f.slope * 1000:.2f}" if f else "-", f"{f.intercept:.3f}" if f else "-",
                      f"{f.r2:.3f}" if f else "-",
                      f"{f.exponent:.2f} [{f.exponent_ci[0]:.2f}, {f.exponent_ci[1]:.2f}]" if f else "-",
                      f.verdict if f else "no fit (too few good samples)")
    Console().print(table)
    for r in runs:
        errs = [s.error for s in r.samples if s.error]
        if errs:
            Console(stderr=True).print(f"[yellow]{r.model}: {len(errs)} failed requests, e.g. {errs[0]}")
    return summary
