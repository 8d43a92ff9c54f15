"""Reading JSONL inputs with errors that name the file and line: one reader for every stage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def iter_records(path: str | Path, what: str = "JSONL") -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(where, record)`` per non-blank line, ``where`` being "FILE: line N".

    A missing file raises FileNotFoundError naming ``what`` and the path; a line that is not JSON, or
    not a JSON object, raises ValueError naming the file and line.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file {str(p)!r} does not exist")
    with p.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{p}: line {i}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where} is not valid JSON: {e}") from e
            if not isinstance(rec, dict):
                raise ValueError(f"{where} is not a JSON object")
            yield where, rec
