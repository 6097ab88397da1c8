"""The hand-off contract every stage follows: one output directory, written atomically.

A stage's output directory holds its artifacts (Hugging Face weights, tokenizer, data files), the
resolved ``config.yaml`` of the stage and a ``manifest.json``: stage name, config hash, the hashes
of its inputs, package versions, metrics and wall time.

:func:`run_stage` is the one way a stage writes: it works in a ``<out>.partial`` sibling, writes
the manifest last and renames the directory into place, so an interrupted stage never leaves a
directory that looks finished. A later run with the same config hash and input hashes is skipped;
``force`` reruns it. The ``.partial`` directory survives a kill, so a training stage resumes from the
checkpoints it holds when it is rerun with the same configuration, with or without ``force``;
``restart`` discards them. ``<out>.lock`` keeps a second run of the same stage out while one writes.

The files a stage reads back (weights, ``system.json``, manifests) are checked by :func:`read_json`
and :func:`check_safetensors`: a damaged one is one sentence naming it and the command that rewrites
it (:func:`file_error`), never a traceback from deep inside a loader.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from pseudocot.config import section_hash, to_data
from pseudocot.errors import PseudoCoTError
from pseudocot.progress import console

MANIFEST = "manifest.json"
CONFIG = "config.yaml"
# What keys a stage's output (metrics and wall time vary between identical reruns); file_hashes only
# for stages that read user files.
KEY_FIELDS = ("stage", "config_hash", "input_hashes", "file_hashes")
STAMP = ".stage-key.json"  # in a .partial directory: the key of the run that is writing it
_PACKAGES = ("pseudocot", "torch", "transformers", "peft", "accelerate", "datasets", "tokenizers")
# The command that rewrites each stage's output ({name}: the output directory's name).
RERUN = {
    "world": "world build CONFIG",
    "zoo": "zoo build CONFIG",
    "probe": "zoo probe CONFIG",
    "data": "data CONFIG",
    "synth": "synth {name} CONFIG",
    "finetune": "finetune CONFIG --which {name}",
    "distill": "distill CONFIG --which {name}",
    "router": "router CONFIG",
    "answer": "answer CONFIG --split {name}",
    "eval": "eval CONFIG",
}
_WHOLE_FILE_BYTES = 64 * 2**20  # files up to this size key a directory by their whole content
_MIB = 2**20
_MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape a stage's result."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


# -- damaged files ---------------------------------------------------------------------------------


def rewrite_hint(path: Path) -> str:
    """What to type to rewrite ``path``: its stage's command with ``--force``, read off the nearest
    manifest (the file's own directory or the one above: ``finetune/base/merged/model.safetensors``)."""
    path = Path(path)
    folders = [path] if path.is_dir() else []
    for folder in [*folders, path.parent, path.parent.parent]:
        if not (folder / MANIFEST).is_file():
            continue
        try:
            command = RERUN[json.loads((folder / MANIFEST).read_text())["stage"]]
        except (ValueError, KeyError, TypeError):
            return f"delete {folder} and rerun the stage that wrote it"
        return f"rerun `pseudocot {command.format(name=folder.name)} --force` to rewrite it"
    return "replace it with a complete copy"


def file_error(path: Path, problem: str) -> PseudoCoTError:
    """The one-sentence error for a damaged file: ``path``, ``problem`` (``is damaged (not JSON)``) and
    what to type to rewrite it."""
    return PseudoCoTError(f"{path} {problem}; {rewrite_hint(path)}.")


def read_json(path: Path, keys: Sequence[str] = ()) -> dict[str, Any]:
    """A JSON object written by a stage, holding ``keys``.

    Raises:
        PseudoCoTError: the file is missing, not a JSON object, or lacks one of ``keys``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise file_error(path, "is missing") from None
    except (UnicodeDecodeError, ValueError):
        raise file_error(path, "is damaged (not JSON)") from None
    if not isinstance(data, dict):
        raise file_error(path, "is damaged (not a JSON object)")
    missing = [k for k in keys if k not in data]
    if missing:
        raise file_error(path, f"is damaged (no {missing[0]!r} key)")
    return data


def check_safetensors(path: Path) -> None:
    """Checks that ``path`` is a whole safetensors file: a JSON header whose tensors end where the file
    does. Reads the header only, so it costs the same for 100 KB and 5 GB; a file damaged inside its
    tensor data passes (safetensors keeps no checksum).

    Raises:
        PseudoCoTError: the file is missing, empty, truncated or not safetensors.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if size < 8 or length > min(size - 8, _MAX_HEADER_BYTES):
                raise ValueError("the header runs past the end of the file")
            header = json.loads(f.read(length))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        whole = 8 + length + end == size
    except FileNotFoundError:
        raise file_error(path, "is missing") from None
    except (AttributeError, ValueError, KeyError, TypeError, IndexError):  # a header of another shape
        whole = False
    if not whole:
        raise file_error(path, "is damaged (truncated or not safetensors)")


# -- keys --------------------------------------------------------------------------------------------


def manifest_hash(stage_dir: Path) -> str:
    """Hash of a finished stage directory's manifest: what a downstream stage records as its input."""
    path = Path(stage_dir) / MANIFEST
    if not path.is_file():
        raise PseudoCoTError(f"{stage_dir} is not a finished stage output (no {MANIFEST}); run its stage first.")
    manifest = read_json(path, KEY_FIELDS[:3])
    key = {k: manifest[k] for k in KEY_FIELDS[:3]}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def directory_hash(directory: Path) -> str:
    """Hash of the files of a directory of one's own (a model given by path): names, sizes, contents.

    Only the top level counts, hidden files left out. A file up to 64 MiB (configs, tokenizers, tiny
    weights) counts by its whole content; a larger one (multi-GB weights, where hashing would take
    minutes) by its size, modification time and first and last MiB, so copying a new model in always
    changes the hash (copying sets the time), while a key check stays milliseconds.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(directory).iterdir() if p.is_file() and not p.name.startswith(".")):
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0".encode())
        if stat.st_size <= _WHOLE_FILE_BYTES:
            digest.update(file_hash(path).encode())
            continue
        digest.update(str(stat.st_mtime_ns).encode())
        with open(path, "rb") as f:
            digest.update(f.read(_MIB))
            f.seek(max(0, stat.st_size - _MIB))
            digest.update(f.read(_MIB))
    return digest.hexdigest()[:16]


def input_hash(path: Path) -> str:
    """What keys a stage on one of its inputs: a stage directory's manifest hash, or the content hash
    of a directory of one's own without a manifest (a local model) or of a single file (one file of
    another stage's output), so replacing it reruns the stage."""
    path = Path(path)
    if path.is_file():
        return file_hash(path)
    if path.is_dir() and not (path / MANIFEST).exists():
        return directory_hash(path)
    return manifest_hash(path)


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes (first 16 hex digits)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    """The manifest of a finished stage directory, or None if it is not one."""
    path = Path(stage_dir) / MANIFEST
    return read_json(path) if path.is_file() else None


# -- running a stage ---------------------------------------------------------------------------------


@dataclass
class StageResult:
    """What :func:`run_stage` returns: where the output is, its manifest, and whether it ran."""

    out_dir: Path
    manifest: dict[str, Any]
    skipped: bool
    note: str = ""  # what became of a .partial directory a killed run left, when the stage was skipped

    @property
    def metrics(self) -> dict[str, Any]:
        """The stage's metrics, as its manifest records them."""
        return self.manifest.get("metrics", {})


def stage_key(
    stage: str, config: BaseModel | dict[str, Any], inputs: Sequence[Path], files: Sequence[Path] = ()
) -> dict[str, Any]:
    """What a stage's output is keyed on (:data:`KEY_FIELDS`): its name, config section, inputs and files."""
    key: dict[str, Any] = {
        "stage": stage,
        "config_hash": section_hash(to_data(config)),
        # Hashes, not paths: a run directory that is moved or named differently stays up to date.
        "input_hashes": sorted(input_hash(p) for p in inputs),
    }
    if files:
        key["file_hashes"] = sorted({file_hash(f) for f in files})
    return key


def run_stage(
    stage: str,
    out_dir: Path,
    config: BaseModel | dict[str, Any],
    inputs: Sequence[Path],
    work: Callable[[Path], dict[str, Any] | None],
    force: bool = False,
    files: Sequence[Path] = (),
    restart: bool = False,
) -> StageResult:
    """Runs ``work`` into ``<out>.partial`` and renames it into place, unless the output is up to date.

    What a killed run left in ``<out>.partial`` is resumed by any run with the same key (config and
    input hashes), ``force`` or not; ``restart`` discards it. A run of another key removes it (nothing
    in it can serve). When the output is up to date and the run not forced, a ``.partial`` of the same
    key (a killed forced run) is kept for ``force`` to resume and the result's ``note`` says so; one of
    another key is removed. A ``.partial`` whose manifest is written (killed just before the rename) is
    promoted, not redone. If ``work`` raises before writing anything (a refusal: a config or input it
    rejects), the ``.partial`` it was given is removed, so a refused run leaves nothing behind.

    Args:
        stage: the stage's name, recorded in the manifest.
        out_dir: the output directory.
        config: the stage's resolved configuration section; its hash keys the output.
        inputs: directories this stage reads: finished stage outputs (keyed by their manifest hashes)
            or directories of one's own such as a local model (keyed by their content).
        work: writes the stage's artifacts into the directory it is given and returns metrics.
        force: rerun even when the output is up to date.
        files: user files the stage reads (not stage outputs); their contents key the output too.
        restart: rerun from scratch, discarding what a killed run left (implies ``force``).

    Returns:
        The output directory and its manifest; ``skipped`` tells whether ``work`` ran.

    Raises:
        PseudoCoTError: another run is writing this stage (its pid is named), or an input is not
            finished or damaged.
    """
    out_dir = Path(out_dir)
    config_data = to_data(config)
    key = stage_key(stage, config_data, inputs, files)
    partial = out_dir.with_name(out_dir.name + ".partial")
    main, barrier = processes()
    # Under accelerate launch only the main process writes, so only it takes the lock: the ranks of
    # one launch never block each other, and a second launch's main process fails at once.
    with stage_lock(out_dir) if main else nullcontext():
        existing = _readable(out_dir / MANIFEST)  # a damaged one is rewritten like an outdated one
        left = _partial_key(partial)
        finished = _readable(partial / MANIFEST) if left == key else None
        # Every process decides from the same files before the main one changes any of them.
        barrier()
        if restart or (left is not None and left != key):
            if main and partial.exists():
                shutil.rmtree(partial)
        elif finished is not None:  # killed between writing the manifest and the rename: only promote it
            if main:
                _promote(partial, out_dir)
            barrier()
            return StageResult(out_dir, finished, skipped=True)
        if existing is not None and not (force or restart) and all(existing.get(k) == v for k, v in key.items()):
            note = ""
            if left is not None and left == key:
                note = f"{partial} holds a killed --force run: --force resumes it, --restart discards it"
            elif left is not None:
                note = f"removed {partial}, left by a killed run of another configuration"
            barrier()
            return StageResult(out_dir, existing, skipped=True, note=note)
        return _run(stage, out_dir, partial, config_data, key, work, main, barrier)


def _run(
    stage: str,
    out_dir: Path,
    partial: Path,
    config_data: dict[str, Any],
    key: dict[str, Any],
    work: Callable[[Path], dict[str, Any] | None],
    main: bool,
    barrier: Callable[[], None],
) -> StageResult:
    """Runs ``work`` in ``partial`` (resuming what it holds), writes the manifest and promotes it."""
    stamp = partial / STAMP
    if main:
        if not _holds_nothing(partial):
            console.print(f"[dim]{stage}: resuming the killed run in {partial} (--restart starts over)[/]")
        partial.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps(key, sort_keys=True))
    barrier()
    started = time.time()
    try:
        metrics = work(partial) or {}
    except BaseException:
        if main and _holds_nothing(partial):
            shutil.rmtree(partial, ignore_errors=True)  # refused or stopped before any work: nothing to resume
        raise
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


def _readable(path: Path) -> dict[str, Any] | None:
    """A JSON object file this module wrote, or None if it is missing or was cut off by a kill."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _partial_key(partial: Path) -> dict[str, Any] | None:
    """The key of the run that left ``partial`` (its stamp, or its manifest once finished); ``{}`` for
    one whose key is unreadable; None if there is no ``partial``."""
    if not partial.is_dir():
        return None
    recorded = _readable(partial / STAMP) or _readable(partial / MANIFEST) or {}
    return {k: v for k, v in recorded.items() if k in KEY_FIELDS}


def _holds_nothing(partial: Path) -> bool:
    """Whether ``partial`` holds no file but its stamp (empty folders, such as a Trainer's, do not count)."""
    return not any(p.is_file() and p.name != STAMP for p in partial.rglob("*"))


@contextmanager
def stage_lock(out_dir: Path) -> Iterator[None]:
    """Holds ``<out>.lock`` exclusively (``flock``, not waiting) while a stage decides and writes.

    The lock file holds the holder's pid, named in the error a second run gets. It is removed on
    release; a run killed while holding it leaves the file, but the kernel drops the lock with the
    process, so the next run takes it.

    Raises:
        PseudoCoTError: another process holds the lock.
    """
    path = out_dir.with_name(out_dir.name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise PseudoCoTError(
                f"another pseudocot run (pid {pid}) is writing {out_dir}; wait for it to finish or stop it."
            ) from None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)  # the holder removed this file as we opened it: lock the one now at the path
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # before unlocking, so a waiter holding the old file retries
        os.close(fd)


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
