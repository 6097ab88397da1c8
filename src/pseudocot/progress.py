"""Rich progress bars: one for plain loops, one that follows a Hugging Face Trainer."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback

console = Console(stderr=True)
T = TypeVar("T")


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterates ``items`` behind a progress bar (shown only on a terminal)."""
    with _progress() as bar:
        task = bar.add_task(description, total=total if total is not None else len(items), info="")  # type: ignore[arg-type]
        for item in items:
            yield item
            bar.advance(task)


@contextmanager
def counter(description: str, total: int) -> Iterator[Callable[[int, str], None]]:
    """A progress bar advanced by hand: yields ``advance(n, info)``."""
    with _progress() as bar:
        task = bar.add_task(description, total=total, info="")
        yield lambda n, info="": bar.update(task, advance=n, info=info)


class RichProgressCallback(TrainerCallback):
    """Shows a Trainer's steps and latest loss as a rich progress bar."""

    def __init__(self, description: str) -> None:
        self.description = description
        self._bar: Progress | None = None
        self._task: Any = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._bar = _progress()
        self._bar.start()
        self._task = self._bar.add_task(self.description, total=state.max_steps, completed=state.global_step, info="")

    def on_step_end(self, args, state, control, **kwargs):
        if self._bar is not None:
            self._bar.update(self._task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._bar is not None and logs and "loss" in logs:
            self._bar.update(self._task, info=f"loss {logs['loss']:.3f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
