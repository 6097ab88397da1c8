"""Thought quality after distillation, and the paper's two-step claim, measured on the tiny world.

    .venv/bin/python benchmarks/thought_quality.py [--config configs/tiny.yaml] [--seeds 0 1 2]

Needs a finished ``pseudocot run CONFIG`` (the fine-tuned base and teacher, the distilled mid and TTM).

Part 1, thought quality survives distillation: the fine-tuned base answers the test split given no
thought, the gold explanation, or a thought written (greedy) by the teacher, the mid model or the
TTM. The claim (issue 3): on hard items the base given TTM thoughts is at least 85% as accurate as
given teacher thoughts, with the TTM at most a fifth of the teacher's parameters.

Part 2, one step or two: the TTM's zoo model is trained again per seed, with the same number of
student steps (``distill.ttm.max_steps``) three ways: SFT only (cross-entropy on the reasoning set,
no teacher), one-step KD (fine-tuned teacher -> TTM) and two-step KD (teacher -> mid -> TTM, the
mid model also retrained with that seed), each hop with the config's recipe. The fine-tuned
teacher's top-k log-probabilities are cached once and shared by every hop it teaches (each mid model
gets a cache of its own); the first seed's one-step hop is also run with the live teacher, to show
what the cache changes in time and in quality. Mean, standard deviation and range
over seeds are printed; whatever comes out is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pseudocot.config import load_config
from pseudocot.eval.thoughts import GOLD, NONE, thought_quality
from pseudocot.pipeline import Pipeline
from pseudocot.stage import manifest_hash
from pseudocot.train.distill import distill
from pseudocot.world.build import world_split

console = Console()


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def part1(pipe: Pipeline, records, base: str, easy: int, hard: int) -> dict:
    thinkers = {
        "no thought": NONE,
        "gold explanation": GOLD,
        "teacher (fine-tuned)": str(pipe.finetune_dir("teacher") / "merged"),
        "mid (1st hop)": str(pipe.root / "distill" / "mid"),
        "TTM (2nd hop)": str(pipe.root / "distill" / "ttm"),
    }
    results = thought_quality(base, thinkers, records, pipe.cfg.protocol, easy, hard)
    table = Table(title=f"Fine-tuned base given thoughts, {len(records)} test items (chance 25%)")
    for col in ("thoughts by", "params", "tokens/thought", "easy", "hard", "all"):
        table.add_column(col, justify="left" if col == "thoughts by" else "right")
    for name, info in results.items():
        acc = info["accuracy"]
        params = f"{info['parameters'] / 1e6:.2f}M" if "parameters" in info else "-"
        tokens = f"{info['mean_thought_tokens']:.1f}" if "mean_thought_tokens" in info else "-"
        table.add_row(name, params, tokens, _pct(acc["easy"]), _pct(acc["hard"]), _pct(acc["all"]))
    console.print(table)
    teacher, ttm = results["teacher (fine-tuned)"], results["TTM (2nd hop)"]
    ratio = ttm["accuracy"]["hard"] / max(teacher["accuracy"]["hard"], 1e-9)
    size = ttm["parameters"] / teacher["parameters"]
    holds = ratio >= 0.85 and size <= 0.2
    console.print(
        f"TTM/teacher hard accuracy: {ratio:.2f} (claim >= 0.85); TTM/teacher parameters: {size:.2f} "
        f"(claim <= 0.20): {'HOLDS' if holds else 'DOES NOT HOLD'}"
    )
    console.print(f"example TTM thought: {ttm['examples'][0]!r}")
    return {"results": results, "ratio_hard": ratio, "parameter_ratio": size, "holds": holds}


def part2(pipe: Pipeline, records, base: str, easy: int, hard: int, seeds: list[int], work: Path) -> dict:
    cfg = pipe.cfg
    teacher = str(pipe.finetune_dir("teacher") / "merged")
    student = pipe.resolve_model(cfg.distill.ttm.student)
    data = pipe.root / "data"
    key = {"teacher": manifest_hash(pipe.finetune_dir("teacher")), "data": manifest_hash(data)}
    cache = work / "teacher_topk"
    hop_ttm = cfg.distill.ttm.model_copy(update={"teacher_logits": "cached"})
    hop_mid = cfg.distill.mid.model_copy(update={"teacher_logits": "cached"})
    rows: dict[str, dict[int, dict]] = {"SFT only": {}, "1-step KD": {}, "2-step KD": {}}
    seconds: dict[str, float] = {}

    def run(name: str, hop, teacher_ref: str, student_ref: str, seed: int, cache_dir=cache, cache_key=key) -> Path:
        out = work / f"{name}-{seed}"
        started = time.perf_counter()
        hop = hop.model_copy(update={"seed": seed})
        metrics = distill(name, hop, teacher_ref, student_ref, data, out, cache_dir, cache_key)
        seconds[f"{name}-{seed}"] = time.perf_counter() - started
        if metrics.get("cache_computed"):
            console.print(f"[dim]teacher top-k cache: {metrics['cache_computed']} shards computed[/]")
        return out

    for seed in seeds:
        dirs = {
            "SFT only": run("sft", hop_ttm.model_copy(update={"alpha": 1.0}), teacher, student, seed),
            "1-step KD": run("one-step", hop_ttm, teacher, student, seed),
        }
        mid = run("mid", hop_mid, teacher, pipe.resolve_model(cfg.distill.mid.student), seed)
        # The second hop's teacher is this seed's mid model: a cache of its own.
        dirs["2-step KD"] = run("two-step", hop_ttm, str(mid), student, seed, work / f"mid-{seed}-topk", {"mid": seed})
        if seed == seeds[0]:
            live = hop_ttm.model_copy(update={"teacher_logits": "online"})
            dirs["1-step KD, live teacher"] = run("one-step-live", live, teacher, student, seed)
            rows["1-step KD, live teacher"] = {}
        quality = thought_quality(base, {k: str(v) for k, v in dirs.items()}, records, cfg.protocol, easy, hard)
        for name, info in quality.items():
            rows[name][seed] = info["accuracy"]

    table = Table(
        title=f"TTM thought quality by training recipe ({cfg.distill.ttm.max_steps} student steps, seeds {seeds}): "
        "the base's accuracy given the TTM's thoughts"
    )
    for col in ("recipe", "hard: per seed", "hard: mean ± sd", "hard: range", "all: mean ± sd"):
        table.add_column(col, justify="left" if col == "recipe" else "right")
    summary = {}
    for name, per_seed in rows.items():
        hard_acc = [a["hard"] for a in per_seed.values()]
        all_acc = [a["all"] for a in per_seed.values()]
        sd_h = statistics.stdev(hard_acc) if len(hard_acc) > 1 else 0.0
        sd_a = statistics.stdev(all_acc) if len(all_acc) > 1 else 0.0
        table.add_row(
            name,
            " ".join(_pct(a) for a in hard_acc),
            f"{_pct(statistics.mean(hard_acc))} ± {_pct(sd_h)}",
            f"{_pct(min(hard_acc))}..{_pct(max(hard_acc))}",
            f"{_pct(statistics.mean(all_acc))} ± {_pct(sd_a)}",
        )
        summary[name] = {"hard": hard_acc, "all": all_acc}
    console.print(table)
    first = seeds[0]
    console.print(
        f"seconds per hop (seed {first}): SFT {seconds[f'sft-{first}']:.0f}, 1-step cached "
        f"{seconds[f'one-step-{first}']:.0f} (includes building the cache), 1-step live teacher "
        f"{seconds[f'one-step-live-{first}']:.0f}, mid {seconds[f'mid-{first}']:.0f}, "
        f"2-step 2nd hop (cache of the mid model built in it) {seconds[f'two-step-{first}']:.0f}"
    )
    if len(seeds) > 1:
        later = statistics.median(seconds[f"one-step-{s}"] for s in seeds[1:])
        console.print(f"1-step hop with the cache already built: median {later:.0f} s over seeds {seeds[1:]}")
    return {"accuracy": summary, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--split", default="test")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="no seeds: part 1 only")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    cfg = load_config(args.config)
    pipe = Pipeline(cfg)
    needed = [pipe.finetune_dir("base"), pipe.finetune_dir("teacher"), pipe.root / "distill" / "ttm"]
    missing = [str(p) for p in needed if not (p / "manifest.json").is_file()]
    if missing or cfg.world is None or cfg.distill is None:
        sys.exit(f"run `pseudocot run {args.config}` first: {', '.join(missing) or 'world/distill section'} missing.")
    records = world_split(pipe.world_dir, args.split)
    base = str(pipe.finetune_dir("base") / "merged")
    easy, hard = cfg.world.easy_max_steps, cfg.world.hard_min_steps
    figures = {"part1": part1(pipe, records, base, easy, hard)}
    if args.seeds:
        with tempfile.TemporaryDirectory(prefix="thought-quality-") as tmp:
            figures["part2"] = part2(pipe, records, base, easy, hard, args.seeds, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
