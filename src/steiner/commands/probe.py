"""`steiner probe`: does an endpoint's latency grow linearly with completion tokens?"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from steiner.config import add_command
    from steiner.probe import ProbeConfig, main

    p = add_command(
        sub, "probe", ProbeConfig, main,
        help="time an endpoint against completion length (sequential vs parallel decoding)",
        description="Send requests of spread-out lengths to OpenAI-compatible endpoints, fit wall time against "
        "completion tokens (slope, intercept, R^2, exponent with a 95 percent interval, quadratic term) and say "
        "whether the endpoint decodes one sequence (linear) or searches in parallel (sub-linear). Writes "
        "probe.csv, probe.json and probe.png to --out. Repeat --model / --base-url to compare several.",
    )
    # --model A --model B (and --base-url) collect every occurrence; "A,B" works too
    for action in p._actions:
        if action.dest in ("cfg__model", "cfg__base_url"):
            action.__class__ = _Extend

class _Extend(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        items = list(getattr(namespace, self.dest, None) or [])
        items += [v for v in str(values).split(",") if v]
        setattr(namespace, self.dest, items)
