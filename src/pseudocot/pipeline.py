"""Runs the stage graph (:data:`pseudocot.graph.STAGES`): one stage, or every stage in order for ``pseudocot run``.

Every stage writes through :func:`pseudocot.stage.run_stage`, so a finished, up-to-date stage is
skipped and an interrupted one leaves nothing that looks finished.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.table import Table

from pseudocot.config import PseudoCoTConfig
from pseudocot.errors import PseudoCoTError
from pseudocot.graph import STAGE, Run, present, stages_of
from pseudocot.progress import console
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
                job = stage.job(self, part)
                out, inputs = self.out(name, part), stage.inputs(self, part)
                result = run_stage(name, out, job.config, inputs, job.work, self.force, job.files, self.restart)
                _report(f"{name} {part}" if part else name, result)
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
