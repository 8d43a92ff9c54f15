"""An on-disk cache of teacher replies, so that a rerun of synthesis never pays for a request twice.

One JSON file per key under ``<dir>/<key[:2]>/<key>.json``. Writes go to a temporary file in the
same folder and are renamed into place (``os.replace`` is atomic), so concurrent writers -- coroutines,
threads or processes -- never leave a half-written entry: a reader sees the old file, the new one or
none. Keys hash what determines a reply (model, messages, sampling parameters) and deliberately not
where it was sent (the base URL): the same request to another replica of the model is the same request.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def request_key(payload: dict[str, Any]) -> str:
    """A stable SHA-256 hex key of a JSON-ready request payload (key order does not matter)."""
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class DiskCache:
    """A folder of JSON entries keyed by `request_key`; only successful replies should be put here."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        if len(key) < 3 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"cache key must be a lowercase hex digest, got {key!r}")
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored entry, or None when absent or unreadable (an unreadable entry is a miss, not an error)."""
        try:
            with open(self.path(key), encoding="utf-8") as f:
                value = json.load(f)
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> Path:
        """Store ``value`` atomically under ``key`` and return its file."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:8]}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(value, f, ensure_ascii=False, indent=1)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*/*.json"))
