"""The tiny world's headline table and claims over several training seeds.

    .venv/bin/python benchmarks/seeds.py [--config configs/tiny.yaml] [--seeds 0 1 2]

Every seed runs the whole pipeline after the zoo (data order, fine-tunes, traces, both distillation
hops, the router) in its own run directory, ``runs/seeds/seed-N``; the world and the zoo are the same
for every seed (the zoo comes from its shipped snapshot). A finished seed is skipped, like any stage.
It prints the evaluation's accuracy per row and subject as the mean with the lowest and highest seed,
then every claim of :mod:`pseudocot.world.claims` on every seed (the distillation order also on validation: the
teacher's, mid's and TTM's own reasoning written there), and whether it holds on all of them.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--root", type=Path, default=Path("runs/seeds"))
    args = parser.parse_args()
    console = Console()
    hard_min_steps = load_config(args.config).world.hard_min_steps
    runs = {seed: run_seed(args.config, seed, args.root) for seed in args.seeds}

    accuracy: dict[tuple[str, str], list[float]] = {}
    for run_dir in runs.values():
        items = Items(
            json.loads((run_dir / "eval" / "results.json").read_text())["items"], hard_min_steps=hard_min_steps
        )
        for row in items.rows():
            for benchmark, subject in SUBJECTS.items():
                for group, hard in (("all", None), ("hard", True)):
                    key = (row, f"{subject} {group}")
                    accuracy.setdefault(key, []).append(items.accuracy(row, benchmark=benchmark, hard=hard))
    table = Table(title=f"Test accuracy over seeds {args.seeds}: mean [lowest, highest]")
    columns = [f"{s} {g}" for s in SUBJECTS.values() for g in ("all", "hard")]
    for col in ("row", *columns):
        table.add_column(col, justify="left" if col == "row" else "right")
    for row in dict.fromkeys(r for r, _ in accuracy):
        cells = [accuracy[(row, c)] for c in columns]
        table.add_row(row, *(f"{statistics.mean(v):.1%} [{min(v):.0%}, {max(v):.0%}]" for v in cells))
    console.print(table)

    cfg = load_config(args.config)
    claims = {
        seed: check_claims(
            run_dir,
            hard_min_steps,
            validation_reasoning(run_dir, cfg.protocol, cfg.world.easy_max_steps, hard_min_steps),
        )
        for seed, run_dir in runs.items()
    }
    table = Table(title="Claims on every seed (test split, unless a claim names validation)")
    for col in ("claim", "must be", *(f"seed {s}" for s in args.seeds), "holds on all"):
        table.add_column(col, justify="left" if col == "claim" else "right")
    failed = 0
    for i, claim in enumerate(claims[args.seeds[0]]):
        per_seed = [claims[s][i] for s in args.seeds]
        holds = all(c.holds for c in per_seed)
        failed += not holds
        bound = "-" if claim.rule == "report" else f"{claim.rule} {claim.threshold:.3g}"
        verdict = "-" if claim.rule == "report" else ("yes" if holds else "NO")
        table.add_row(claim.name, bound, *(f"{c.value:.3f}" for c in per_seed), verdict)
    console.print(table)
    console.print(f"{failed} claim(s) fail on at least one seed.")


if __name__ == "__main__":
    main()
