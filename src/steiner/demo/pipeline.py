"""A resumable sequence of named stages: each records its config, seed, versions and wall time, and a
rerun skips stages whose output is already complete for the same config."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DONE_FILE = "stage.json"


def versions() -> dict[str, str]:
    """Versions of the libraries a run depends on, for the report."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("steiner", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def hardware() -> dict[str, Any]:
    """The machine a run used: CPU model, cores, memory, GPU if any."""
    import os

    info: dict[str, Any] = {"platform": platform.platform(), "cpu_count": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    try:
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def _digest(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class StageRecord:
    name: str
    config: dict[str, Any]
    seconds: float
    result: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    digest: str = ""


@dataclass
class Pipeline:
    """Runs stages under ``root``; stage ``name`` keeps its marker in ``root/name/stage.json``."""

    root: Path
    on_start: Callable[[str], None] | None = None
    records: list[StageRecord] = field(default_factory=list)

    def result(self, name: str) -> dict[str, Any]:
        """The result of a stage run (or skipped) earlier in this pipeline."""
        for rec in self.records:
            if rec.name == name:
                return rec.result
        raise KeyError(f"stage {name!r} has not run")

    def run(self, name: str, config: dict[str, Any], fn: Callable[[Path], dict[str, Any] | None]) -> dict[str, Any]:
        """Run ``fn(stage_dir)`` unless a complete run with the same config is already on disk."""
        stage_dir = self.root / name
        marker = stage_dir / DONE_FILE
        # a stage is only as fresh as the stages before it: their digests are part of its own
        digest = _digest({"config": config, "upstream": [r.digest for r in self.records]})
        if marker.is_file():
            try:
                done = json.loads(marker.read_text())
            except json.JSONDecodeError:
                done = {}
            if done.get("digest") == digest:
                rec = StageRecord(name, config, done.get("seconds", 0.0), done.get("result", {}), skipped=True,
                                  digest=digest)
                self.records.append(rec)
                return rec.result
        if self.on_start:
            self.on_start(name)
        stage_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        result = fn(stage_dir) or {}
        seconds = time.perf_counter() - t0
        marker.write_text(json.dumps({"digest": digest, "config": config, "seconds": seconds, "result": result},
                                     indent=2, default=str))
        self.records.append(StageRecord(name, config, seconds, result, digest=digest))
        return result
