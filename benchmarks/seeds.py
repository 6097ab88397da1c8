"""The tiny world's headline table and claims over several training seeds.

    .venv/bin/python benchmarks/seeds.py [--config configs/tiny.yaml] [--seeds 0 1 2]
    .venv/bin/python benchmarks/seeds.py --runs runs/tiny     # the same tables for finished runs (make demo's)
    .venv/bin/python benchmarks/seeds.py --config configs/smol.yaml --runs runs/smol --no-claims

Every seed runs the whole pipeline after the zoo (data order, fine-tunes, traces, both distillation
hops, the router) in its own run directory, ``runs/seeds/seed-N``; the world and the zoo are the same
for every seed (the zoo comes from its shipped snapshot). A finished seed is skipped, like any stage.
It prints the evaluation's accuracy per row and subject as the mean with the lowest and highest seed,
how often each row that writes its own reasoning concludes the gold value, then every claim of
:mod:`pseudocot.world.claims` on every seed (the distillation order also on validation: the teacher's,
mid's and TTM's own reasoning written there), and whether it holds on all of them. ``--no-claims`` stops
before the claims, for runs of another config on the tiny world's questions (``configs/smol.yaml``), which
lack the rows the claims read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pseudocot.config import load_config
from pseudocot.world.claims import SUBJECTS, Items, check_claims, validation_reasoning

# The sections whose seed a training seed sets: everything after the zoo that draws random numbers.
SEEDED = ("data", "finetune.base", "finetune.teacher", "distill.mid", "distill.ttm", "router", "synth.traces")


def run_seed(config: str, seed: int, root: Path) -> Path:
    run_dir = root / f"seed-{seed}"
    overrides = [f"run_dir={run_dir}", *(f"{section}.seed={seed}" for section in SEEDED)]
    subprocess.run([sys.executable, "-m", "pseudocot", "run", config, *overrides], check=True)
    return run_dir


def _spread_table(
    console: Console, title: str, values: dict[tuple[str, str], list[float]], groups: tuple[str, ...]
) -> None:
    """One row per system, a column per subject and group: the mean over runs with the lowest and highest."""
    table = Table(title=f"{title}: mean [lowest, highest]")
    columns = [f"{s} {g}" for s in SUBJECTS.values() for g in groups]
    for col in ("row", *columns):
        table.add_column(col, justify="left" if col == "row" else "right")
    for row in dict.fromkeys(r for r, _ in values):
        cells = [values[(row, c)] for c in columns]
        table.add_row(row, *(f"{statistics.mean(v):.1%} [{min(v):.0%}, {max(v):.0%}]" for v in cells))
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--root", type=Path, default=Path("runs/seeds"))
    parser.add_argument(
        "--runs", type=Path, nargs="+", help="finished run directories to read instead (e.g. runs/tiny, make demo's)"
    )
    parser.add_argument("--no-claims", action="store_true", help="print the tables only (a run of another config)")
    args = parser.parse_args()
    console = Console()
    cfg = load_config(args.config)
    hard_min_steps, easy_max_steps = cfg.world.hard_min_steps, cfg.world.easy_max_steps
    if args.runs:
        runs = {str(run_dir): run_dir for run_dir in args.runs}
    else:
        runs = {f"seed {seed}": run_seed(args.config, seed, args.root) for seed in args.seeds}

    accuracy: dict[tuple[str, str], list[float]] = {}
    concluded: dict[tuple[str, str], list[float]] = {}
    # The rows that answer after their own reasoning (not "always a thought": its thoughts are the TTM's).
    own_reasoning = {system.name for system in cfg.eval.systems if system.kind == "cot"}
    for run_dir in runs.values():
        items = Items(
            json.loads((run_dir / "eval" / "results.json").read_text())["items"], hard_min_steps=hard_min_steps
        )
        for row in items.rows():
            if row in own_reasoning:
                for benchmark, subject in SUBJECTS.items():
                    for group, hard in (("all", None), ("hard", True)):
                        value = items.concluded(row, benchmark=benchmark, hard=hard)
                        concluded.setdefault((row, f"{subject} {group}"), []).append(value)
            for benchmark, subject in SUBJECTS.items():
                easy = [i["correct"] for i in items.select(row, benchmark) if i["difficulty"] <= easy_max_steps]
                cells = {
                    "all": items.accuracy(row, benchmark=benchmark),
                    "easy": sum(easy) / len(easy),
                    "hard": items.accuracy(row, benchmark=benchmark, hard=True),
                }
                for group, value in cells.items():
                    accuracy.setdefault((row, f"{subject} {group}"), []).append(value)
    _spread_table(console, f"Test accuracy over {', '.join(runs)}", accuracy, ("all", "easy", "hard"))
    _spread_table(console, "Own reasoning that concludes the gold value", concluded, ("all", "hard"))
    if args.no_claims:
        return

    claims = {
        label: check_claims(
            run_dir, hard_min_steps, validation_reasoning(run_dir, cfg.protocol, easy_max_steps, hard_min_steps)
        )
        for label, run_dir in runs.items()
    }
    table = Table(title="Claims on every run (test split, unless a claim names validation)")
    for col in ("claim", "must be", *runs, "holds on all"):
        table.add_column(col, justify="left" if col == "claim" else "right")
    failed = 0
    for i, claim in enumerate(next(iter(claims.values()))):
        per_seed = [claims[label][i] for label in runs]
        holds = all(c.holds for c in per_seed)
        failed += not holds
        bound = "-" if claim.rule == "report" else f"{claim.rule} {claim.threshold:.3g}"
        verdict = "-" if claim.rule == "report" else ("yes" if holds else "NO")
        table.add_row(claim.name, bound, *(f"{c.value:.3f}" for c in per_seed), verdict)
    console.print(table)
    console.print(f"{failed} claim(s) fail on at least one run.")


if __name__ == "__main__":
    main()
