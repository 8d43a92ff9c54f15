"""A resumable sequence of named stages, each keyed by everything it runs with.

A stage is ``run(name, config, fn)``: ``config`` is the full config the stage runs with (a config
dataclass, or a dataclass/dict bundling several) and ``fn(config, stage_dir)`` does the work from it.
The stage's resume key is a digest of that whole config plus the digests of its inputs -- the earlier
stages whose folders the config points into (and any named in ``after``) -- so changing any option of
a stage reruns it and every stage that reads its output, and nothing else. A stage is complete when
``root/NAME/stage.json`` holds its key; a rerun skips it.

A config does not hold the code that runs it. A stage that writes data (``code=``: the modules that write
it) also keys on a fingerprint of those modules' source, and hands the stages that read it a digest of
what it wrote, not of its key: after a change to the synthesis code the data is written again, and the
training stages rerun only if it came out different. (A reused synthesis written by older code once cost
a study 32 points, docs/demo.md.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DONE_FILE = "stage.json"
OUT = "<out>"  # how a path under the pipeline's root is spelled in a key, so a moved folder still resumes


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


def stage_key(config: Any, root: Path) -> Any:
    """``config`` as plain JSON data: dataclasses (nested too) as dicts, paths as strings, and every
    path under ``root`` written relative to it as ``<out>/...``."""
    prefix = str(root).rstrip("/") + "/"
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: stage_key(getattr(config, f.name), root) for f in dataclasses.fields(config)}
    if isinstance(config, dict):
        return {str(k): stage_key(v, root) for k, v in config.items()}
    if isinstance(config, list | tuple):
        return [stage_key(v, root) for v in config]
    if isinstance(config, Path):
        config = str(config)
    if isinstance(config, str) and (config == prefix[:-1] or config.startswith(prefix)):
        return OUT + config[len(prefix) - 1:]
    if config is None or isinstance(config, bool | int | float | str):
        return config
    raise TypeError(f"stage config value {config!r} ({type(config).__name__}) is not plain data")


def referenced_stages(key: Any) -> set[str]:
    """Names of the folders under the root (``<out>/NAME/...``) that a stage key points into."""
    if isinstance(key, dict):
        return set().union(*(referenced_stages(v) for v in key.values()))
    if isinstance(key, list):
        return set().union(*(referenced_stages(v) for v in key))
    if isinstance(key, str) and key.startswith(OUT + "/"):
        return {key[len(OUT) + 1:].split("/", 1)[0]}
    return set()


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def code_fingerprint(modules: Iterable[str]) -> str:
    """A digest of the source of ``modules`` (a package: every file under it, templates too), by content."""
    import importlib.util

    h = hashlib.sha256()
    for name in sorted(set(modules)):
        spec = importlib.util.find_spec(name)
        if spec is None:
            raise ValueError(f"module {name!r} not found (a stage's code= names modules whose source keys it)")
        if spec.origin is None or Path(spec.origin).name == "__init__.py":  # a package, or a folder of data
            folder = Path(spec.origin).parent if spec.origin else Path(list(spec.submodule_search_locations or [])[0])
            files = sorted(f for f in folder.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
        else:
            folder, files = Path(spec.origin).parent, [Path(spec.origin)]
        for f in files:
            h.update(f"{name}:{f.relative_to(folder)}\n".encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


VOLATILE = (DONE_FILE, "*.png", "*.log")  # written by a data stage but not part of what it hands on


def output_digest(folder: Path) -> str:
    """A digest of every file under ``folder`` (paths and bytes), the marker, plots and logs left out."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = f.relative_to(folder)
        if any(rel.match(pat) for pat in VOLATILE):
            continue
        h.update(f"{rel}\n".encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


@dataclass
class StageRecord:
    name: str
    config: Any
    seconds: float
    result: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    digest: str = ""
    inputs: list[str] = field(default_factory=list)
    output: str = ""  # digest of what a data stage wrote (``code=``); "" for others

    @property
    def handed_on(self) -> str:
        """What the stages that read this one key on: its output where it has one, else its own key."""
        return self.output or self.digest


@dataclass
class Pipeline:
    """Runs stages under ``root``; stage ``name`` works in ``root/name`` and keeps its marker there."""

    root: Path
    on_start: Callable[[str], None] | None = None
    on_skip: Callable[[str], None] | None = None  # a stage found complete on disk
    records: list[StageRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def dir(self, name: str) -> Path:
        """The folder of stage ``name``."""
        return self.root / name

    def record(self, name: str) -> StageRecord:
        """The record of a stage run (or skipped) earlier in this pipeline."""
        for rec in self.records:
            if rec.name == name:
                return rec
        raise KeyError(f"stage {name!r} has not run in this pipeline")

    def result(self, name: str) -> dict[str, Any]:
        """The result of a stage run (or skipped) earlier in this pipeline."""
        return self.record(name).result

    def run(self, name: str, config: Any, fn: Callable[[Any, Path], dict[str, Any] | None], *,
            after: Iterable[str] = (), code: Iterable[str] = ()) -> dict[str, Any]:
        """Run ``fn(config, stage_dir)`` unless a complete run with the same key is already on disk.

        ``after`` names earlier stages this one depends on in ways its config's paths do not show.
        ``code`` names the modules that write this stage's data: their source is part of its key, and
        the stages that read it key on the data it wrote (see the module docstring).
        """
        key = stage_key(config, self.root)
        done_names = {r.name for r in self.records}
        inputs = sorted((referenced_stages(key) & done_names | set(after)) - {name})
        # a stage is only as fresh as the stages it reads: their digests are part of its own
        ident: dict[str, Any] = {"config": key, "inputs": {n: self.record(n).handed_on for n in inputs}}
        code = sorted(set(code))
        if code:
            ident["code"] = code_fingerprint(code)
        digest = _digest(ident)
        stage_dir = self.dir(name)
        marker = stage_dir / DONE_FILE
        if marker.is_file():
            try:
                done = json.loads(marker.read_text())
            except json.JSONDecodeError:
                done = {}
            if done.get("digest") == digest and (not code or done.get("output")):
                rec = StageRecord(name, key, done.get("seconds", 0.0), done.get("result", {}), skipped=True,
                                  digest=digest, inputs=inputs, output=done.get("output", ""))
                self.records.append(rec)
                if self.on_skip:
                    self.on_skip(name)
                return rec.result
        if self.on_start:
            self.on_start(name)
        if code and stage_dir.exists():
            # a data stage writes its data anew: resuming would keep records an older code wrote (the
            # synthesis resumes its step records) and count them as skipped, so the output would differ
            shutil.rmtree(stage_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
        marker.unlink(missing_ok=True)  # an interrupted rerun must not leave the old marker looking complete
        t0 = time.perf_counter()
        result = fn(config, stage_dir) or {}
        seconds = time.perf_counter() - t0
        output = output_digest(stage_dir) if code else ""
        marker.write_text(json.dumps({"digest": digest, "inputs": inputs, "config": key, "seconds": seconds,
                                      "result": result, **({"code": code, "output": output} if code else {})},
                                     indent=2, default=str))
        self.records.append(StageRecord(name, key, seconds, result, digest=digest, inputs=inputs, output=output))
        return result
