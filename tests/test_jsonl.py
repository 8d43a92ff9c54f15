"""The one JSONL reader/writer: round trip, errors naming file and line, resumable reads."""

from __future__ import annotations

import pytest

from steiner.jsonl import read_jsonl, write_jsonl


def test_round_trip_keeps_unicode(tmp_path):
    p = tmp_path / "sub" / "x.jsonl"
    write_jsonl(p, [{"a": 1}, {"q": "正确 ÷"}])
    assert p.read_text(encoding="utf-8") == '{"a": 1}\n{"q": "正确 ÷"}\n'
    assert read_jsonl(p) == [{"a": 1}, {"q": "正确 ÷"}]


def test_errors_name_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"a": 1}\n\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: line 3 is not a JSON object"):
        read_jsonl(p)
    with pytest.raises(FileNotFoundError, match="questions file"):
        read_jsonl(tmp_path / "none.jsonl", "questions")


def test_resumable_read_ignores_only_a_cut_last_line(tmp_path):
    p = tmp_path / "steps.jsonl"
    assert read_jsonl(p, resumable=True) == []
    p.write_text('{"a": 1}\n{"a": 2')
    assert read_jsonl(p, resumable=True) == [{"a": 1}]
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(p)
    p.write_text('{"a": 1\n{"a": 2}\n')
    with pytest.raises(ValueError, match="line 1"):
        read_jsonl(p, resumable=True)


def test_drop_partial_line_cuts_only_the_unfinished_write(tmp_path):
    from steiner.jsonl import drop_partial_line

    p = tmp_path / "steps.jsonl"
    p.write_text('{"a": 1}\n{"a": 2}\n{"a"')
    drop_partial_line(p)
    assert p.read_text() == '{"a": 1}\n{"a": 2}\n'
    drop_partial_line(p)  # a whole file is left alone
    assert p.read_text() == '{"a": 1}\n{"a": 2}\n'
