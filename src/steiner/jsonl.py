"""JSONL files for every stage: one reader whose errors name the file and line, one (atomic) writer, and
the resume helper of files a run appends to (`read_jsonl(..., resumable=True)`, `drop_partial_line`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def _parse(line: str, where: str) -> dict[str, Any]:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where} is not valid JSON: {e}") from e
    if not isinstance(rec, dict):
        raise ValueError(f"{where} is not a JSON object")
    return rec


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
            if line.strip():
                where = f"{p}: line {i}"
                yield where, _parse(line, where)


def read_jsonl(path: str | Path, what: str = "JSONL", *, resumable: bool = False) -> list[dict[str, Any]]:
    """All records of a JSONL file (errors as in `iter_records`).

    ``resumable`` reads a file that a run appends to and may have been interrupted: a missing file is
    empty, and a last line without its newline that is not valid JSON (a write cut short) is ignored.
    """
    p = Path(path)
    if not resumable:
        return [rec for _, rec in iter_records(p, what)]
    if not p.exists():
        return []
    text = p.read_text(encoding="utf-8")
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(_parse(line, f"{p}: line {i}"))
        except ValueError:
            if i == len(lines) and not text.endswith("\n"):
                break
            raise
    return out


def dump_line(record: dict[str, Any]) -> str:
    """One JSONL line (UTF-8 text kept as is, newline included)."""
    return json.dumps(record, ensure_ascii=False) + "\n"


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Write ``records`` to ``path`` atomically (a temporary file renamed into place, so a reader never
    sees half a file), one JSON object per line; parent folders are made."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(dump_line(rec))
    os.replace(tmp, p)


def drop_partial_line(path: str | Path) -> None:
    """Cut a partial last line (an interrupted write) off ``path`` in place: nothing else is rewritten."""
    path = Path(path)
    if not path.exists():
        return
    with path.open("r+b") as fh:
        end = fh.seek(0, 2)
        if not end:
            return
        fh.seek(end - 1)
        if fh.read(1) == b"\n":
            return
        pos = end
        while pos > 0:  # scan back in blocks for the last newline
            start = max(0, pos - 65536)
            fh.seek(start)
            idx = fh.read(pos - start).rfind(b"\n")
            if idx >= 0:
                fh.truncate(start + idx + 1)
                return
            pos = start
        fh.truncate(0)
