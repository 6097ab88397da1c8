"""Helpers shared by the integration tests."""

import subprocess
import time
from pathlib import Path


def kill_after_first_checkpoint(command: list[str], checkpoints: Path, timeout: float = 120) -> None:
    """Runs ``command`` and kills it once the Trainer has finished a checkpoint in ``checkpoints``."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while (
        proc.poll() is None and time.time() < deadline and not list(checkpoints.glob("checkpoint-*/trainer_state.json"))
    ):
        time.sleep(0.01)
    proc.kill()
    proc.wait()
