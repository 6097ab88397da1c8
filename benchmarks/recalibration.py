"""A pseudo-CoT row with another base, with the system's router threshold and with one calibrated again.

    .venv/bin/python benchmarks/recalibration.py [--config configs/tiny.yaml] [--base zoo:tiny-3b]

Reads a finished run of the config (nothing is trained or written). The base (``--base``) takes the
system's place, as the evaluation's "base + pseudo-CoT" row does; it is rolled out (always thinking) on the
router's calibration questions, taken as the router stage took them (``router.split`` and its sizes), in
the evaluation's answer mode and decoding, and the threshold is calibrated again by the router's rule
(:func:`pseudocot.train.router.calibrate`, what ``eval.recalibrate`` does). Both thresholds are then
replayed on the same always-think rollouts of each benchmark's test split.
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from pseudocot.config import load_config
from pseudocot.eval.benchmarks import load_benchmark
from pseudocot.graph import Run
from pseudocot.infer.system import PseudoCoT
from pseudocot.records import read_jsonl
from pseudocot.train.rollouts import rollout
from pseudocot.train.router import calibrate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--base", default="zoo:tiny-3b")
    args = parser.parse_args()
    cfg = load_config(args.config)
    run, router = Run(cfg), cfg.router
    skip = router.train_questions if router.split == "validation" else 0  # the first ones fit the MLP
    questions = [r for r in read_jsonl(run.data_dir / "validation.jsonl") if r.choices][skip:]
    questions = questions[: router.validation_questions]
    system = PseudoCoT.load(
        run.system_dir,
        base=run.resolve_model(args.base),
        base_preset=cfg.decoding.eval,
        batch_size=cfg.eval.batch_size,
        answer_mode=cfg.eval.answer_mode,
    )
    started = time.perf_counter()
    calibration = rollout(system, questions, system.max_thoughts)
    thresholds = {"system's": system.router.threshold}
    thresholds["recalibrated"] = calibrate(calibration, system.router, router)
    console = Console()
    seconds = time.perf_counter() - started
    console.print(f"{args.base}'s rollouts on {len(questions)} calibration questions: {seconds:.1f} s")
    table = Table("threshold", "value", "set", "questions", "accuracy", "call rate", title=f"{args.base} + pseudo-CoT")
    sets = {"calibration": calibration}
    sets |= {
        bench: rollout(system, load_benchmark(bench, "test", cfg.eval.mmlu_dir, run.world_dir), system.max_thoughts)
        for bench in cfg.eval.benchmarks
    }
    for name, threshold in thresholds.items():
        for label, rollouts in sets.items():
            result = rollouts.simulate(rollouts.policy_scores(system.router), threshold)
            row = (name, f"{threshold:.3f}", label, str(len(rollouts.records)))
            table.add_row(*row, f"{result['accuracy']:.1%}", f"{result['call_rate']:.1%}")
    console.print(table)


if __name__ == "__main__":
    main()
