"""The demo's terminal: a rule per stage, rich progress bars and the summary, nothing interleaved.

Inside ``Display`` the libraries' own output is kept off the terminal: transformers' and the Hub's
tqdm bars ("Loading weights", "Writing model shards") are off, the Trainer's tqdm bar and printed log
dicts are replaced by a rich bar, and log records and Python warnings go to a log file instead. Everything
is restored on exit, so the settings never leak outside a demo run.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any

# loggers that keep their own stderr handlers instead of propagating to the root logger
_LIBRARY_LOGGERS = ("transformers", "datasets", "trl", "accelerate", "huggingface_hub", "torch")


def rich_trainer_callback() -> type:
    """A `transformers.TrainerCallback` that draws training steps as a rich progress bar and prints nothing else."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from transformers import TrainerCallback

    class RichTrainerProgress(TrainerCallback):
        def __init__(self) -> None:
            self.progress: Progress | None = None
            self.task: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.is_world_process_zero:
                self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                         TimeRemainingColumn(), TextColumn("loss {task.fields[loss]}"))
                self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step,
                                                   loss="-")
                self.progress.start()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kw: Any) -> None:
            if self.progress is not None and logs and "loss" in logs:
                self.progress.update(self.task, loss=f"{float(logs['loss']):.4f}")

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)
                self.progress.stop()
                self.progress = None

    return RichTrainerProgress


class Display:
    """Context manager for a demo run; ``stage(name)`` draws the rule that opens a stage.

    ``log_file`` receives the log records and warnings the libraries would have printed.
    """

    def __init__(self, log_file: str | Path) -> None:
        import rich

        self.log_file = Path(log_file)
        self.console = rich.get_console()  # the one the progress bars draw on
        self._stack = contextlib.ExitStack()

    def stage(self, name: str) -> None:
        self.console.rule(f"[bold]{name}")

    def skipped(self, name: str) -> None:
        self.console.print(f"[dim]{name}: complete, resumed")

    def __enter__(self) -> Display:
        stack = self._stack
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        stack.callback(handler.close)
        for lg in [logging.getLogger()] + [logging.getLogger(n) for n in _LIBRARY_LOGGERS]:
            stack.callback(setattr, lg, "handlers", list(lg.handlers))
            lg.handlers = [handler]

        def to_log(message: Any, category: type[Warning], filename: str, lineno: int, *a: Any, **kw: Any) -> None:
            logging.getLogger("py.warnings").warning("%s:%s: %s: %s", filename, lineno, category.__name__, message)

        stack.enter_context(warnings.catch_warnings())
        warnings.showwarning = to_log

        from transformers.utils import logging as hf_logging

        if hf_logging.is_progress_bar_enabled():  # also switches the Hub's bars
            hf_logging.disable_progress_bar()
            stack.callback(hf_logging.enable_progress_bar)
        with contextlib.suppress(ImportError):
            import datasets

            if datasets.is_progress_bar_enabled():
                datasets.disable_progress_bars()
                stack.callback(datasets.enable_progress_bars)

        import transformers.trainer as hf_trainer

        # the Trainer picks its progress callback from these module globals when it is built
        bar = rich_trainer_callback()
        for name in ("DEFAULT_PROGRESS_CALLBACK", "PrinterCallback"):
            stack.callback(setattr, hf_trainer, name, getattr(hf_trainer, name))
            setattr(hf_trainer, name, bar)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
