"""`steiner generate` through the real CLI entry point on the tiny model folder."""

from __future__ import annotations

from steiner.cli import main


def test_generate_prints_numbered_steps_and_answer(tiny_model_dir, capsys):
    rc = main(["generate", "--model", str(tiny_model_dir), "--prompt", "Reach 24 with 3 5 7 11",
               "--max-steps", "2", "--format-strict", "--max-reasoning-tokens", "40", "--max-new-tokens", "60",
               "--seed", "0", "--temperature", "1.0"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Step 1:" in out and "Answer:" in out
    assert "Format problems" not in out
    assert "reasoning tokens" in out


def test_generate_raw_shows_special_tokens(tiny_model_dir, capsys):
    rc = main(["generate", "--model", str(tiny_model_dir), "--prompt", "hi", "--max-new-tokens", "5", "--raw",
               "--max-steps", "1", "--temperature", "0"])
    assert rc == 0
    assert "<|reasoning_start|>" in capsys.readouterr().out


def test_generate_bad_model_dir_names_the_path(tmp_path, capsys):
    missing = tmp_path / "nope"
    rc = main(["generate", "--model", str(missing), "--prompt", "hi"])
    assert rc == 2
    assert str(missing) in capsys.readouterr().err.replace("\n", "")


def test_generate_bad_option_is_named(tiny_model_dir, capsys):
    rc = main(["generate", "--model", str(tiny_model_dir), "--prompt", "hi", "--top-p", "0"])
    assert rc == 2
    assert "top_p" in capsys.readouterr().err
