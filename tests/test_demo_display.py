"""The demo's terminal display: library bars, log records and warnings stay off the terminal, and
everything is restored afterwards."""

from __future__ import annotations

import warnings


def test_library_output_goes_to_the_log_and_settings_are_restored(tmp_path, capfd):
    import transformers.trainer as hf_trainer
    from transformers.utils import logging as hf_logging

    from steiner.demo.display import Display

    before = (hf_trainer.DEFAULT_PROGRESS_CALLBACK, hf_trainer.PrinterCallback, hf_logging.is_progress_bar_enabled())
    log = tmp_path / "demo.log"
    with Display(log) as display:
        display.stage("cpt")
        display.skipped("synth")
        hf_logging.get_logger("transformers.modeling_utils").warning("some weights were not initialized")
        for _ in hf_logging.tqdm(range(3), desc="Loading weights"):
            pass
        warnings.warn("a deprecated argument", FutureWarning, stacklevel=1)
        # the Trainer builds its progress callback from these names: both are the rich bar now
        assert hf_trainer.DEFAULT_PROGRESS_CALLBACK is hf_trainer.PrinterCallback
        assert hf_trainer.DEFAULT_PROGRESS_CALLBACK.__name__ == "RichTrainerProgress"
    out, err = capfd.readouterr()
    term = out + err
    assert "cpt" in term and "synth: complete, resumed" in term  # a stage's rule, a resumed stage's line
    for noise in ("some weights", "Loading weights", "deprecated argument"):
        assert noise not in term, noise
    logged = log.read_text()
    assert "some weights were not initialized" in logged and "FutureWarning: a deprecated argument" in logged
    assert (hf_trainer.DEFAULT_PROGRESS_CALLBACK, hf_trainer.PrinterCallback,
            hf_logging.is_progress_bar_enabled()) == before
