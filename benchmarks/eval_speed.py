"""Evaluation speed: items per second of several systems, batched against one item at a time.

    .venv/bin/python benchmarks/eval_speed.py [--config configs/tiny.yaml] [--items 100] [--repeats 3]

Needs a finished ``pseudocot run CONFIG``. Each system of the config's eval section (or those named
with ``--systems``) answers the first ``--items`` items of the first benchmark through the harness
(:func:`pseudocot.eval.harness.run_system`), once with the eval batch size and once with batch size
1; each is timed ``--repeats`` times after a warm-up and the median is reported, with the ratio.
Both runs must give the same picks (greedy decoding), which the script checks.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from rich.console import Console
from rich.table import Table
from transformers.utils import logging as hf_logging

from pseudocot.config import load_config
from pseudocot.eval.benchmarks import load_benchmark
from pseudocot.eval.harness import load_system, run_system
from pseudocot.pipeline import Pipeline

console = Console()


def _median_time(fn, repeats: int) -> tuple[float, list]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--systems", nargs="*", help="Names of eval systems (default: all).")
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    cfg = load_config(args.config)
    pipe = Pipeline(cfg)
    if cfg.eval is None or not (pipe.system_dir / "system.json").is_file():
        sys.exit(f"run `pseudocot run {args.config}` first (and give the config an eval section).")
    bench = cfg.eval.benchmarks[0]
    records = load_benchmark(bench, cfg.eval.split, cfg.eval.mmlu_dir, pipe.world_dir, args.items)
    systems = [s for s in pipe.eval_systems() if not args.systems or s.name in args.systems]
    table = Table(title=f"{len(records)} items of {bench}: items per second (median of {args.repeats})")
    for col in ("system", f"batched ({cfg.eval.batch_size})", "one at a time", "ratio"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for spec in systems:
        rates = []
        picks = []
        for batch in (cfg.eval.batch_size, 1):
            settings = cfg.eval.model_copy(update={"batch_size": batch})
            runner, _ = load_system(
                spec, pipe.resolve_model, str(pipe.system_dir), cfg.protocol, cfg.decoding.eval, settings
            )
            seconds, results = _median_time(
                lambda runner=runner, spec=spec: run_system(runner, spec, records), args.repeats
            )
            rates.append(len(records) / seconds)
            picks.append([r.choice for r in results])
        same = "" if picks[0] == picks[1] else " (picks differ!)"
        table.add_row(spec.name, f"{rates[0]:.1f}", f"{rates[1]:.1f}", f"{rates[0] / rates[1]:.1f}x{same}")
    console.print(table)


if __name__ == "__main__":
    main()
