"""Synthetic data: teacher-written reasoning traces and document-grounded question-answer pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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
