"""Each stage of a configuration, run in order: its wall time and the peak GPU memory it took.

    .venv/bin/python benchmarks/stage_memory.py CONFIG [dotted overrides...]

Runs the stages ``pseudocot run CONFIG`` runs (forced, so every one is timed), one at a time in this
process; before each, the CUDA allocator's peak is reset and its cache emptied, so each row's peak is
that stage's own: the most memory its tensors held at once (allocated) and what the allocator held
from the GPU for them (reserved). Without CUDA the memory columns say so. On a GPU the pipeline prints
each stage's estimated peak (:mod:`pseudocot.memory`) before it runs, so the output sets the estimate and
the measured peak side by side. ``benchmarks/gpu_check.sh`` runs it on SmolLM2 in bfloat16 and with 4-bit
QLoRA.
"""

from __future__ import annotations

import gc
import sys
import time

import torch
from rich.console import Console
from rich.table import Table

from pseudocot.config import load_config
from pseudocot.pipeline import Pipeline

GIB = 2**30


def main(config: str, overrides: list[str]) -> None:
    pipeline = Pipeline(load_config(config, overrides), force=True)
    cuda = torch.cuda.is_available()
    title = f"{config} {' '.join(overrides)}".strip()
    table = Table("stage", "wall time", "peak allocated", "peak reserved", title=title)
    for name in pipeline.stages():
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        pipeline.stage(name)
        seconds = time.perf_counter() - started
        if cuda:
            allocated = f"{torch.cuda.max_memory_allocated() / GIB:.2f} GiB"
            reserved = f"{torch.cuda.max_memory_reserved() / GIB:.2f} GiB"
        else:
            allocated = reserved = "no CUDA"
        table.add_row(name, f"{seconds:.1f} s", allocated, reserved)
        Console().print(f"{name}: {seconds:.1f} s, peak GPU memory {allocated} allocated, {reserved} reserved")
    Console().print(table)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
