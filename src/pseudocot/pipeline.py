"""Runs the stage graph (:data:`pseudocot.graph.STAGES`): one stage, or every stage in order for ``pseudocot run``.

Every stage writes through :func:`pseudocot.stage.run_stage`, so a finished, up-to-date stage is
skipped and an interrupted one leaves nothing that looks finished. On a CUDA GPU a stage that trains or
runs models prints its estimated peak memory (:mod:`pseudocot.memory`) before it starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rich.table import Table

from pseudocot.config import PseudoCoTConfig
from pseudocot.errors import PseudoCoTError
from pseudocot.graph import STAGE, Run, present, stages_of
from pseudocot.memory import memory_line
from pseudocot.progress import console
from pseudocot.runners import Job
from pseudocot.stage import StageResult, is_main_process, run_stage


def _report(name: str, result: StageResult) -> None:
    if not is_main_process():
        return
    if result.skipped:
        console.print(f"[dim]{name}: up to date in {result.out_dir}, skipped (--force reruns it)[/]")
        if result.note:
            console.print(f"[dim]{name}: {result.note}[/]")
    else:
        console.print(f"[green]{name}[/]: done in {result.manifest['wall_time_s']:.1f} s -> {result.out_dir}")


def _gpu() -> tuple[str, int] | None:
    """This process's CUDA GPU: its name and memory in bytes (None without one)."""
    import torch

    if not torch.cuda.is_available():
        return None
    device = torch.cuda.current_device()
    return torch.cuda.get_device_name(device), torch.cuda.get_device_properties(device).total_memory


def _announced(label: str, job: Job) -> Callable[[Path], dict | None]:
    """The job's work, first printing its estimated peak memory where it runs on a GPU."""
    if job.memory is None:
        return job.work
    estimate = job.memory

    def work(out: Path) -> dict | None:
        gpu = _gpu() if is_main_process() else None
        if gpu:
            try:
                console.print(memory_line(label, estimate(), *gpu), highlight=False)
            except (OSError, ValueError, KeyError) as error:  # a hub model's config out of reach, a damaged file
                console.print(f"[dim]{label}: no memory estimate ({error})[/]", highlight=False)
        return job.work(out)

    return work


class Pipeline(Run):
    """The stages of one configuration, run into its run directory."""

    def __init__(self, cfg: PseudoCoTConfig, force: bool = False, restart: bool = False) -> None:
        """``force`` reruns stages that are up to date, resuming what a killed run of the same
        configuration left; ``restart`` reruns them from scratch (see :func:`run_stage`)."""
        super().__init__(cfg, restart)
        self.force = force

    def stage(self, name: str, parts: list[str] | None = None) -> list[StageResult]:
        """Runs the named parts of a stage (by default those ``run`` runs), skipping what is up to date."""
        stage = STAGE[name]
        for section in stage.needs:
            if getattr(self.cfg, section) is None:
                raise PseudoCoTError(f"the config has no {section} section; add one (see configs/tiny.yaml).")
        results = []
        try:
            for part in stage.parts(self.cfg) if parts is None else parts:
                job, label = stage.job(self, part), f"{name} {part}" if part else name
                out, inputs, work = self.out(name, part), stage.inputs(self, part), _announced(label, job)
                result = run_stage(name, out, job.config, inputs, work, self.force, job.files, self.restart)
                _report(label, result)
                if stage.show:
                    stage.show(self, result)
                results.append(result)
        finally:
            self.memo.clear()
        return results

    def stages(self) -> list[str]:
        """The stages this configuration has, in the order ``run`` executes them."""
        return [stage.name for stage in stages_of(self)]

    def run(self, only: list[str] | None = None) -> None:
        """Runs every stage (or only the named ones) in order, then prints each stage's wall time."""
        names = [s.name for s in present(self.cfg)]
        unknown = [s for s in only or [] if s not in names]
        if unknown:
            raise PseudoCoTError(f"unknown stage {unknown[0]!r}; this config has: {', '.join(names)}.")
        table = Table("stage", "wall time", title="wall time per stage")
        for name in self.stages():
            if not only or name in only:
                started = time.perf_counter()
                self.stage(name)
                table.add_row(name, f"{time.perf_counter() - started:.1f} s")
        if is_main_process():
            console.print(table)


def snapshot_zoo(cfg: PseudoCoTConfig) -> list[Path]:
    """Copies every built zoo model into ``zoo.snapshot`` (see :mod:`pseudocot.world.zoo`)."""
    from pseudocot.world.zoo import write_snapshot

    if cfg.zoo is None:
        raise PseudoCoTError("the config has no zoo section; add one (see configs/tiny.yaml).")
    if cfg.zoo.snapshot is None:
        raise PseudoCoTError(
            "zoo.snapshot is not set; name the directory to write, e.g. zoo.snapshot=snapshots/tiny-zoo."
        )
    written = []
    for name in cfg.zoo.models:
        out = Path(cfg.zoo.snapshot) / name
        write_snapshot(Run(cfg).zoo_dir(name), out)
        console.print(f"zoo {name}: snapshot written to {out}")
        written.append(out)
    return written
