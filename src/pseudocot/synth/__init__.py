"""Synthetic data: teacher-written reasoning traces and document-grounded question-answer pairs."""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pseudocot.progress import counter

Item = TypeVar("Item")


def read_log(path: Path) -> list[dict[str, Any]]:
    """The complete rows of a progress log, which is rewritten without a last line a kill cut short,
    so that rows appended after it start on a line of their own."""
    if not path.is_file():
        return []
    rows, lines = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
            lines.append(line)
        except json.JSONDecodeError:
            continue
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return rows


def log_batches(
    path: Path,
    label: str,
    total: int,
    done: dict[Hashable, Any],
    batches: Sequence[tuple[int, Sequence[Item]]],
    key: Callable[[Item], Hashable],
    fields: tuple[str, str],
    produce: Callable[[int, Sequence[Item]], Sequence[Any]],
) -> int:
    """Runs ``produce(index, batch)`` on each batch still to do, appending one row per item to the progress log
    at ``path`` (``{fields[0]: key(item), fields[1]: output}``, flushed per batch, so a kill loses at most the
    batch in flight) and adding each output to ``done``; ``total`` items in all, the rest read back from the log.
    Returns the number of items produced."""
    produced = 0
    with counter(label, total) as advance, open(path, "a", encoding="utf-8") as log:
        advance(total - sum(len(batch) for _, batch in batches), "resumed" if done else "")
        for index, batch in batches:
            outputs = produce(index, batch)
            rows = []
            for item, output in zip(batch, outputs, strict=True):
                done[key(item)] = output
                rows.append(json.dumps({fields[0]: key(item), fields[1]: output}) + "\n")
            log.write("".join(rows))
            log.flush()
            produced += len(batch)
            advance(len(batch), "")
    return produced
