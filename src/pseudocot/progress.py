"""Rich progress bars and the console every command prints to.

Kept free of torch and transformers: the CLI imports it for ``--help``. The bar that follows a Hugging
Face Trainer is :class:`pseudocot.train.trainer.RichProgressCallback`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
T = TypeVar("T")


def progress_bar() -> Progress:
    """A rich progress display on the console (drawn only on a terminal)."""
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
    with progress_bar() as bar:
        task = bar.add_task(description, total=total if total is not None else len(items), info="")  # type: ignore[arg-type]
        for item in items:
            yield item
            bar.advance(task)


@contextmanager
def counter(description: str, total: int) -> Iterator[Callable[[int, str], None]]:
    """A progress bar advanced by hand: yields ``advance(n, info)``."""
    with progress_bar() as bar:
        task = bar.add_task(description, total=total, info="")
        yield lambda n, info="": bar.update(task, advance=n, info=info)
