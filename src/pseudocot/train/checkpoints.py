"""Finding a checkpoint to resume from after a training stage was killed."""

from __future__ import annotations

import json
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest ``checkpoint-N`` folder the Trainer finished writing, or None.

    The Trainer writes ``trainer_state.json`` last, so a folder whose state file is missing or
    unreadable was cut off by the kill and is passed over (``get_last_checkpoint`` would pick it).
    """
    folders = sorted(
        (p for p in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.name.rsplit("-", 1)[-1].isdigit()),
        key=lambda p: int(p.name.rsplit("-", 1)[-1]),
        reverse=True,
    )
    for folder in folders:
        try:
            json.loads((folder / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        return str(folder)
    return None
