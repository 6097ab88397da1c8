"""The hand-off contract every stage follows: one output directory, written atomically.

A stage's output directory holds its artifacts (Hugging Face weights, tokenizer, data files), the
resolved ``config.yaml`` of the stage and a ``manifest.json``: stage name, config hash, the hashes
of its inputs' manifests, package versions, metrics and wall time.

:func:`run_stage` is the one way a stage writes: it works in a ``<out>.partial`` sibling, writes
the manifest last and renames the directory into place, so an interrupted stage never leaves a
directory that looks finished. A later run with the same config hash and input hashes is skipped;
``force`` reruns it. The ``.partial`` directory survives a kill, so a training stage can resume
from the checkpoints it holds when it is rerun with the same configuration.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from pseudocot.config import section_hash, to_data
from pseudocot.errors import PseudoCoTError

MANIFEST = "manifest.json"
CONFIG = "config.yaml"
_PACKAGES = ("pseudocot", "torch", "transformers", "peft", "accelerate", "datasets", "tokenizers")


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape a stage's result."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def manifest_hash(stage_dir: Path) -> str:
    """Hash of a finished stage directory's manifest: what a downstream stage records as its input."""
    path = Path(stage_dir) / MANIFEST
    if not path.is_file():
        raise PseudoCoTError(f"{stage_dir} is not a finished stage output (no {MANIFEST}); run its stage first.")
    manifest = json.loads(path.read_text())
    # Only what defines the output counts: metrics and wall time vary between identical reruns.
    key = {k: manifest[k] for k in ("stage", "config_hash", "input_hashes")}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    """The manifest of a finished stage directory, or None if it is not one."""
    path = Path(stage_dir) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class StageResult:
    """What :func:`run_stage` returns: where the output is, its manifest, and whether it ran."""

    out_dir: Path
    manifest: dict[str, Any]
    skipped: bool

    @property
    def metrics(self) -> dict[str, Any]:
        """The stage's metrics, as its manifest records them."""
        return self.manifest.get("metrics", {})


def run_stage(
    stage: str,
    out_dir: Path,
    config: BaseModel | dict[str, Any],
    inputs: Sequence[Path],
    work: Callable[[Path], dict[str, Any] | None],
    force: bool = False,
    files: Sequence[Path] = (),
) -> StageResult:
    """Runs ``work`` into a temporary sibling of ``out_dir`` and renames it into place.

    Args:
        stage: the stage's name, recorded in the manifest.
        out_dir: the output directory.
        config: the stage's resolved configuration section; its hash keys the output.
        inputs: finished stage directories this stage reads; their manifest hashes key the output.
        work: writes the stage's artifacts into the directory it is given and returns metrics.
        force: rerun even when the output is up to date.
        files: user files the stage reads (not stage outputs); their contents key the output too.

    Returns:
        The output directory and its manifest; ``skipped`` tells whether ``work`` ran.
    """
    out_dir = Path(out_dir)
    config_data = to_data(config)
    key = {
        "stage": stage,
        "config_hash": section_hash(config_data),
        # Hashes, not paths: a run directory that is moved or named differently stays up to date.
        "input_hashes": sorted(manifest_hash(p) for p in inputs),
    }
    if files:
        key["file_hashes"] = sorted({file_hash(f) for f in files})
    existing = read_manifest(out_dir)
    if existing is not None and not force and all(existing.get(k) == v for k, v in key.items()):
        return StageResult(out_dir, existing, skipped=True)

    main, barrier = processes()
    partial = out_dir.with_name(out_dir.name + ".partial")
    finished = read_manifest(partial)
    if finished is not None and not force and all(finished.get(k) == v for k, v in key.items()):
        # Killed between writing the manifest and the rename: the work is done, only promote it.
        if main:
            _promote(partial, out_dir)
        barrier()
        return StageResult(out_dir, finished, skipped=True)
    stamp = partial / ".stage-key.json"
    if main:
        if partial.exists() and (force or not stamp.is_file() or json.loads(stamp.read_text()) != key):
            shutil.rmtree(partial)  # left by a run of another configuration: nothing to resume from
        partial.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps(key, sort_keys=True))
    barrier()

    started = time.time()
    metrics = work(partial) or {}
    barrier()
    wall = round(time.time() - started, 2)
    if not main:  # under accelerate launch, the main process alone writes and renames
        barrier()
        return StageResult(out_dir, {**key, "metrics": metrics, "wall_time_s": wall}, skipped=False)
    manifest = {
        **key,
        "packages": package_versions(),
        "metrics": metrics,
        "wall_time_s": wall,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (partial / CONFIG).write_text(yaml.safe_dump(config_data, sort_keys=False))
    stamp.unlink()
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    _promote(partial, out_dir)
    barrier()
    return StageResult(out_dir, manifest, skipped=False)


def processes() -> tuple[bool, Callable[[], None]]:
    """(whether this is the main process, a barrier) for a stage run by one or several processes.

    Under ``accelerate launch`` or ``torchrun`` every process runs the stage and trains its share;
    only the main one writes the stage's directory, and the others wait for it.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return True, lambda: None
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        # The launcher (torchrun, accelerate launch) set RANK, WORLD_SIZE and MASTER_ADDR/PORT; the
        # Trainer's Accelerator finds this group already up and uses it.
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank() == 0, dist.barrier


def is_main_process() -> bool:
    """Whether this process writes files (always, unless several processes run the stage)."""
    return processes()[0]


def _promote(partial: Path, out_dir: Path) -> Path:
    """Renames a finished ``.partial`` directory into place, replacing an older output."""
    old = out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    partial.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes (first 16 hex digits)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
