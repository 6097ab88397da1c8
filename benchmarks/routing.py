"""The pseudo-CoT system against its baselines on the tiny world's test split, and the loop's speed.

    .venv/bin/python benchmarks/routing.py [--config configs/tiny.yaml] [--speed-questions 64]

Needs a finished ``pseudocot run CONFIG`` (the system directory written by the router stage).

One always-think rollout of every test question (the base's answer after 0, 1, .., M thoughts) is
replayed exactly for every policy (see :mod:`pseudocot.train.rollouts`): never think, always think
1 and M times, the router at its calibrated threshold, random at the router's call rate (mean of 20
seeds), and the base's entropy over the options with its threshold calibrated on validation
rollouts the same way as the router's. The router's row is also run live through the loop, and
must agree with its replay.

Claims (issue 4): on hard items the system beats the base answering directly by at least 30
points; it keeps at least 95% of the always-think gain while giving thoughts to at most 60% of
questions; APGR >= 0.8 and AUROC of "a thought helps" >= 0.85, both above the entropy baseline.

Speed: the loop on ``--speed-questions`` questions, batched against one question at a time, in
questions per second (median of 3 runs each).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from rich.console import Console
from rich.table import Table

from pseudocot.config import load_config
from pseudocot.infer.router import EntropyPolicy, RandomPolicy
from pseudocot.infer.system import PseudoCoT
from pseudocot.pipeline import Pipeline
from pseudocot.records import read_jsonl
from pseudocot.train.rollouts import apgr, auroc, rollout
from pseudocot.train.router import calibrate
from pseudocot.world.build import world_split

console = Console()


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--speed-questions", type=int, default=64)
    args = parser.parse_args()
    cfg = load_config(args.config)
    pipe = Pipeline(cfg)
    if not (pipe.system_dir / "system.json").is_file() or cfg.world is None or cfg.router is None:
        sys.exit(f"run `pseudocot run {args.config}` first: no system in {pipe.system_dir}.")
    system = PseudoCoT.load(pipe.system_dir)
    router, m = system.router, system.max_thoughts
    test = world_split(pipe.world_dir, "test")
    validation = [r for r in read_jsonl(pipe.root / "data" / "validation.jsonl") if r.choices]
    validation = validation[: cfg.router.validation_questions]
    easy_max, hard_min = cfg.world.easy_max_steps, cfg.world.hard_min_steps
    started = time.perf_counter()
    rollouts = rollout(system, test, m)
    val_rollouts = rollout(system, validation, m)
    console.print(
        f"rollouts of {len(test)} test and {len(validation)} validation questions: "
        f"{time.perf_counter() - started:.0f} s"
    )

    scores = rollouts.policy_scores(router)
    entropy_policy = EntropyPolicy()
    entropy_policy.threshold = calibrate(val_rollouts, entropy_policy, cfg.router)
    entropy = rollouts.policy_scores(entropy_policy)
    hard = torch.tensor([(r.difficulty or 0) >= hard_min for r in test])
    easy = torch.tensor([(r.difficulty or 0) <= easy_max for r in test])

    def row(name: str, sim) -> list:
        figures = {part: sim(rollouts.subset(mask)) for part, mask in (("easy", easy), ("hard", hard))}
        overall = sim(rollouts)
        return [
            name,
            figures["easy"]["accuracy"],
            figures["hard"]["accuracy"],
            overall["accuracy"],
            overall["call_rate"],
            overall["mean_thoughts"],
            overall["mean_flops"],
        ]

    def with_scores(policy_scores_fn, threshold):
        return lambda r: r.simulate(policy_scores_fn(r), threshold)

    routed = rollouts.simulate(scores, router.threshold)
    rows = [
        row("never think (base alone)", lambda r: r.fixed(0)),
        row("always think, 1 thought", lambda r: r.fixed(1)),
        row(f"always think, {m} thoughts", lambda r: r.fixed(m)),  # the same as the row above when m is 1
        row(
            f"router (threshold {router.threshold:.3f})",
            with_scores(lambda r: r.policy_scores(router), router.threshold),
        ),
        row(
            f"entropy (threshold {entropy_policy.threshold:.3f})",
            with_scores(lambda r: r.policy_scores(entropy_policy), entropy_policy.threshold),
        ),
    ]
    random_rows = []
    for seed in range(20):
        policy = RandomPolicy(routed["call_rate"], seed)
        random_rows.append(row("random", with_scores(lambda r, p=policy: r.policy_scores(p), policy.threshold)))
    rows.append(
        [
            "random at the router's call rate (20 seeds)",
            *[statistics.mean(r[i] for r in random_rows) for i in range(1, 7)],
        ]
    )

    table = Table(title=f"Test split, {len(test)} questions ({int(easy.sum())} easy, {int(hard.sum())} hard)")
    for col in ("policy", "easy", "hard", "all", "call rate", "thoughts/q", "MFLOPs/q"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for k, (name, e, h, a, rate, thoughts, flops) in enumerate(rows):
        if k == 2 and m == 1:
            continue  # always thinking the maximum is always thinking once
        table.add_row(name, _pct(e), _pct(h), _pct(a), _pct(rate), f"{thoughts:.2f}", f"{flops / 1e6:.2f}")
    console.print(table)

    quality = Table(title="Router quality on the test split")
    for col in ("score", "APGR", "AUROC (a thought helps, first decision)"):
        quality.add_column(col, justify="left" if col == "score" else "right")
    router_apgr, entropy_apgr = apgr(rollouts, scores), apgr(rollouts, entropy)
    router_auc, entropy_auc = auroc(rollouts.helps(0), scores[:, 0]), auroc(rollouts.helps(0), entropy[:, 0])
    quality.add_row("router", f"{router_apgr:.3f}", f"{router_auc:.3f}")
    quality.add_row("entropy (base's own uncertainty)", f"{entropy_apgr:.3f}", f"{entropy_auc:.3f}")
    console.print(quality)

    never, always1, always_m, routed_row = rows[0], rows[1], rows[2], rows[3]
    best_always = max(always1[3], always_m[3])
    gain_share = (routed_row[3] - never[3]) / (best_always - never[3]) if best_always > never[3] else float("nan")
    claims = [
        (
            f"hard: router {_pct(routed_row[2])} vs direct {_pct(never[2])} (+{100 * (routed_row[2] - never[2]):.1f} "
            "points; claim >= 30)",
            routed_row[2] - never[2] >= 0.30,
        ),
        (
            f"keeps {gain_share:.0%} of the best always-think gain (claim >= 95%) at call rate "
            f"{_pct(routed_row[4])} (claim <= 60%)",
            gain_share >= 0.95 and routed_row[4] <= 0.60,
        ),
        (
            f"APGR {router_apgr:.3f} (claim >= 0.8, entropy {entropy_apgr:.3f})",
            router_apgr >= 0.8 and router_apgr > entropy_apgr,
        ),
        (
            f"AUROC {router_auc:.3f} (claim >= 0.85, entropy {entropy_auc:.3f})",
            router_auc >= 0.85 and router_auc > entropy_auc,
        ),
    ]
    for text, holds in claims:
        console.print(f"{'HOLDS' if holds else 'DOES NOT HOLD'}: {text}")

    live = system.run(test)
    live_accuracy = sum(r.letter == rec.answer for r, rec in zip(live, test, strict=True)) / len(test)
    console.print(
        f"router run live through the loop: accuracy {_pct(live_accuracy)} (replay {_pct(routed['accuracy'])})"
    )

    sample = test[:: max(1, len(test) // args.speed_questions)][: args.speed_questions]
    batched, single = [], []
    for _ in range(3):
        t = time.perf_counter()
        system.run(sample)
        batched.append(len(sample) / (time.perf_counter() - t))
        t = time.perf_counter()
        for record in sample:
            system.run([record])
        single.append(len(sample) / (time.perf_counter() - t))
    b, s = statistics.median(batched), statistics.median(single)
    console.print(
        f"loop speed on {len(sample)} questions (router policy): batched {b:.1f} q/s, "
        f"one at a time {s:.1f} q/s, ratio {b / s:.1f}x (median of 3)"
    )


if __name__ == "__main__":
    main()
