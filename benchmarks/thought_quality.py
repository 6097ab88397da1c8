"""Thought quality after distillation, and SFT against one-step and two-step distillation, on the tiny world.

    .venv/bin/python benchmarks/thought_quality.py [--config configs/tiny.yaml] [--split validation]
        [--seeds 0 1 2 3 4] [--student-steps N] [--work runs/distillation] [--live] [--json FILE]

Needs a finished ``pseudocot run CONFIG`` (the fine-tuned base and teacher, the distilled mid and TTM).
Read on the validation split by default: which recipe wins is a choice, so it is made on validation.

Part 1, thought quality survives distillation: the fine-tuned base answers given no thought, the gold
explanation, or a thought written (greedy) by the teacher, the mid model or the TTM. Printed: the
base's accuracy, and how often each thought model's reasoning concludes the gold value by itself (card
items left out: they rest on a fact no reasoning finds, as in :mod:`pseudocot.world.claims`). The
claims: on hard items the base given TTM thoughts is at least 85% as accurate as given teacher
thoughts, with the TTM at most a fifth of the teacher's parameters; and teacher >= mid >= TTM at
concluding the gold value (2 points of margin for noise).

Part 2, SFT or one step or two: the TTM's zoo model is trained again per seed, with the same number of
student steps (``distill.ttm.max_steps``) three ways: SFT only (cross-entropy on the reasoning set,
no teacher), one-step KD (fine-tuned teacher -> TTM) and two-step KD (teacher -> mid -> TTM, the
mid model also retrained with that seed), each hop with the config's recipe. The seed the config
names is the run's own mid and TTM (not trained again). The fine-tuned teacher's top-k
log-probabilities are the run's own cache; each mid model gets a cache of its own. Every hop is kept
under ``--work``, so an interrupted benchmark resumes where it stopped. Printed per recipe: the
base's accuracy given the TTM's thoughts and the TTM's concluded value, per seed, mean, sd and range;
then each pair of recipes compared seed by seed (mean difference, paired t-test over seeds, exact
McNemar test over the items of every seed pooled), how peaked each hop's soft targets are (the teacher's
cache and each seed's mid's: entropy, top-1 probability), and the winner (a tie when several recipes'
means lie within one hard item of the best). The McNemar test counts every item of every seed as
independent, so it speaks for these seeds' models; whether a recipe is better across training seeds is
the t-test's question. ``--live`` also runs the first seed's one-step hop with the live teacher, to show
what the cache changes in time and quality.
``--student-steps N`` trains the TTM of each recipe N steps in place of the config's (the mid model keeps
its own budget and is shared with the config's run under ``--work``): at a budget where every recipe
reaches the ceiling the benchmark cannot rank them, so the budget below it is fixed before the run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from scipy.stats import ttest_rel

from pseudocot.config import load_config
from pseudocot.eval.metrics import difficulty_group, mcnemar
from pseudocot.eval.thoughts import GOLD, NONE, thought_quality
from pseudocot.pipeline import Pipeline
from pseudocot.stage import manifest_hash
from pseudocot.train.distill import distill
from pseudocot.train.teacher_cache import target_sharpness
from pseudocot.world.build import world_split
from pseudocot.world.claims import order_claims
from pseudocot.world.tasks import unknowable

console = Console()


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _quality(base: str, thinkers: dict[str, str], records, protocol, easy: int, hard: int) -> dict:
    """:func:`thought_quality`, the concluded value counted without card items (as the world's claims count it)."""
    can_conclude = [not unknowable(r) for r in records]
    return thought_quality(base, thinkers, records, protocol, easy, hard, can_conclude=can_conclude)


def _thinkers_table(title: str, results: dict) -> None:
    table = Table(title=title)
    for col in ("thoughts by", "params", "tokens/thought", "easy", "hard", "all", "concludes gold: hard", "all"):
        table.add_column(col, justify="left" if col == "thoughts by" else "right")
    for name, info in results.items():
        acc, own = info["accuracy"], info.get("concluded")
        params = f"{info['parameters'] / 1e6:.2f}M" if "parameters" in info else "-"
        tokens = f"{info['mean_thought_tokens']:.1f}" if "mean_thought_tokens" in info else "-"
        concluded = (_pct(own["hard"]), _pct(own["all"])) if own else ("-", "-")
        table.add_row(name, params, tokens, _pct(acc["easy"]), _pct(acc["hard"]), _pct(acc["all"]), *concluded)
    console.print(table)


def part1(pipe: Pipeline, records, base: str, easy: int, hard: int) -> dict:
    thinkers = {
        "no thought": NONE,
        "gold explanation": GOLD,
        "teacher (fine-tuned)": str(pipe.finetune_dir("teacher") / "merged"),
        "mid (1st hop)": str(pipe.root / "distill" / "mid"),
        "TTM (2nd hop)": str(pipe.root / "distill" / "ttm"),
    }
    results = _quality(base, thinkers, records, pipe.cfg.protocol, easy, hard)
    _thinkers_table(f"Fine-tuned base given thoughts, {len(records)} items (chance 25%)", results)
    teacher, mid, ttm = (results[k] for k in ("teacher (fine-tuned)", "mid (1st hop)", "TTM (2nd hop)"))
    ratio = ttm["accuracy"]["hard"] / max(teacher["accuracy"]["hard"], 1e-9)
    size = ttm["parameters"] / teacher["parameters"]
    holds = ratio >= 0.85 and size <= 0.2
    console.print(
        f"TTM/teacher hard accuracy: {ratio:.2f} (claim >= 0.85); TTM/teacher parameters: {size:.2f} "
        f"(claim <= 0.20): {'HOLDS' if holds else 'DOES NOT HOLD'}"
    )
    ordered = _ordered(teacher["concluded"]["all"], mid["concluded"]["all"], ttm["concluded"]["all"])
    console.print(
        f"gold value concluded, all items but card items: teacher {_pct(teacher['concluded']['all'])} >= mid "
        f"{_pct(mid['concluded']['all'])} >= TTM {_pct(ttm['concluded']['all'])} (2-point margin): "
        f"{'HOLDS' if ordered else 'DOES NOT HOLD'}"
    )
    console.print(f"example TTM thought: {ttm['examples'][0]!r}")
    return {"results": results, "ratio_hard": ratio, "parameter_ratio": size, "holds": holds, "ordered": ordered}


def _ordered(teacher: float, mid: float, ttm: float) -> bool:
    """teacher >= mid >= TTM at concluding the gold value, as the world's claims check it."""
    return all(claim.holds for claim in order_claims(teacher, mid, ttm, split="validation"))


RECIPES = ("SFT only", "1-step KD", "2-step KD")


def _train_recipes(
    pipe: Pipeline, seed: int, steps: int, work: Path, live: bool
) -> tuple[dict[str, Path], Path, Path, dict]:
    """The TTMs of one seed, trained ``steps`` steps, by recipe (each hop trained unless already under
    ``work``), the seed's mid model, the cache of the mid's top-k that the second hop learned from, and the
    seconds each hop took here."""
    cfg = pipe.cfg
    teacher_dir = pipe.finetune_dir("teacher")
    teacher = str(teacher_dir / "merged")
    student = pipe.resolve_model(cfg.distill.ttm.student)
    data = pipe.root / "data"
    # The run's own cache of the fine-tuned teacher's top-k, under the key the pipeline gives it.
    key = {"teacher": manifest_hash(teacher_dir), "data": manifest_hash(data)}
    cache = pipe.topk_cache_dir("mid")
    hop_ttm = cfg.distill.ttm.model_copy(update={"teacher_logits": "cached", "seed": seed, "max_steps": steps})
    # A TTM trained to another budget than the config's is kept apart; the mid model is the same either way.
    suffix = "" if steps == cfg.distill.ttm.max_steps else f"-{steps}-steps"
    hop_mid = cfg.distill.mid.model_copy(update={"teacher_logits": "cached", "seed": seed})
    seconds: dict[str, float] = {}

    def run(name: str, hop, teacher_ref: str, student_ref: str, cache_dir: Path = cache, cache_key=key) -> Path:
        out = work / f"seed-{seed}" / (name if name == "mid" else name + suffix)
        if not (out / "model.safetensors").is_file():
            started = time.perf_counter()
            distill(name, hop, teacher_ref, student_ref, data, out, cache_dir, cache_key)
            seconds[name] = time.perf_counter() - started
        return out

    dirs = {
        "SFT only": run("sft", hop_ttm.model_copy(update={"alpha": 1.0}), teacher, student),
        "1-step KD": run("one-step", hop_ttm, teacher, student),
    }
    # The run's own two hops are this recipe at the config's seed when both hops used a cached teacher.
    cached = cfg.distill.mid.teacher_logits == cfg.distill.ttm.teacher_logits == "cached"
    if cached and seed == cfg.distill.mid.seed == cfg.distill.ttm.seed and not suffix:
        mid, dirs["2-step KD"] = pipe.root / "distill" / "mid", pipe.root / "distill" / "ttm"
        mid_cache = pipe.topk_cache_dir("ttm")
    else:
        mid = run("mid", hop_mid, teacher, pipe.resolve_model(cfg.distill.mid.student))
        # The second hop's teacher is this seed's mid model: a cache of its own.
        mid_cache = work / f"seed-{seed}" / "mid-topk"  # keyed by the mid model, so shared across budgets
        dirs["2-step KD"] = run("two-step", hop_ttm, str(mid), student, mid_cache, {"mid": str(mid)})
    if live:
        dirs["1-step KD, live teacher"] = run(
            "one-step-live", hop_ttm.model_copy(update={"teacher_logits": "online"}), teacher, student
        )
    return dirs, mid, mid_cache, seconds


def _compare(per_seed: dict[str, dict[int, dict]], hard_items: list[int], seeds: list[int]) -> list[dict]:
    """Each pair of recipes, seed by seed, on the base's accuracy on hard items given the TTM's thoughts."""
    rows = []
    for a, b in itertools.combinations(RECIPES, 2):
        diffs = [per_seed[a][s]["accuracy"]["hard"] - per_seed[b][s]["accuracy"]["hard"] for s in seeds]
        t_p = (
            float(
                ttest_rel(
                    [per_seed[a][s]["accuracy"]["hard"] for s in seeds],
                    [per_seed[b][s]["accuracy"]["hard"] for s in seeds],
                ).pvalue
            )
            if len(seeds) > 1
            else float("nan")
        )
        pooled_a = [per_seed[a][s]["right"][i] for s in seeds for i in hard_items]
        pooled_b = [per_seed[b][s]["right"][i] for s in seeds for i in hard_items]
        rows.append({"a": a, "b": b, "diffs": diffs, "t_p": t_p, "mcnemar": mcnemar(pooled_a, pooled_b)})
    return rows


def part2(
    pipe: Pipeline,
    records,
    base: str,
    easy: int,
    hard: int,
    seeds: list[int],
    steps: int,
    work: Path,
    live: bool,
    teacher_concluded: float,
) -> dict:
    cfg = pipe.cfg
    per_seed: dict[str, dict[int, dict]] = {}
    mids: dict[int, dict] = {}
    seconds: dict[int, dict] = {}
    # How peaked each hop's soft targets are: near one-hot targets carry little beyond the hard labels.
    sharpness = {"teacher": target_sharpness(pipe.topk_cache_dir("mid"))}
    for seed in seeds:
        dirs, mid, mid_cache, seconds[seed] = _train_recipes(pipe, seed, steps, work, live and seed == seeds[0])
        sharpness[f"mid, seed {seed}"] = target_sharpness(mid_cache)
        if seconds[seed]:
            hops = ", ".join(f"{name} {s:.0f} s" for name, s in seconds[seed].items())
            console.print(f"seed {seed}: hops trained in this invocation: {hops}")
        thinkers = {"mid (this seed)": str(mid), **{k: str(v) for k, v in dirs.items()}}
        quality = _quality(base, thinkers, records, cfg.protocol, easy, hard)
        mids[seed] = quality.pop("mid (this seed)")
        for name, info in quality.items():
            per_seed.setdefault(name, {})[seed] = info
        _thinkers_table(f"Seed {seed}: the base given each recipe's TTM thoughts ({len(records)} items)", quality)

    table = Table(
        title=f"TTM by training recipe ({steps} student steps, seeds {seeds}): the base's "
        "accuracy given its thoughts, and its own reasoning's concluded value"
    )
    for col in (
        "recipe",
        "hard: per seed",
        "hard: mean ± sd",
        "hard: range",
        "all: mean ± sd",
        "concludes, hard: mean [range]",
    ):
        table.add_column(col, justify="left" if col == "recipe" else "right")
    summary = {}
    for name, runs in per_seed.items():  # the live-teacher hop ran on the first seed only
        hard_acc = [runs[s]["accuracy"]["hard"] for s in seeds if s in runs]
        all_acc = [runs[s]["accuracy"]["all"] for s in seeds if s in runs]
        own = [runs[s]["concluded"]["hard"] for s in seeds if s in runs]
        table.add_row(
            name,
            " ".join(_pct(a) for a in hard_acc),
            f"{_pct(statistics.mean(hard_acc))} ± {_pct(_sd(hard_acc))}",
            f"{_pct(min(hard_acc))}..{_pct(max(hard_acc))}",
            f"{_pct(statistics.mean(all_acc))} ± {_pct(_sd(all_acc))}",
            f"{_pct(statistics.mean(own))} [{_pct(min(own))}, {_pct(max(own))}]",
        )
        summary[name] = {"hard": hard_acc, "all": all_acc, "concluded_hard": own}
    console.print(table)

    hard_items = [i for i, r in enumerate(records) if difficulty_group(r, easy, hard) == "hard"]
    pairs = _compare(per_seed, hard_items, seeds)
    table = Table(title="Recipes compared seed by seed: base accuracy on hard items given the TTM's thoughts")
    for col in ("a - b", "per seed", "mean", "paired t-test p", "McNemar: a only / b only", "McNemar p"):
        table.add_column(col, justify="left" if col == "a - b" else "right")
    for pair in pairs:
        m = pair["mcnemar"]
        table.add_row(
            f"{pair['a']} - {pair['b']}",
            " ".join(f"{100 * d:+.1f}" for d in pair["diffs"]),
            f"{100 * statistics.mean(pair['diffs']):+.1f} pts",
            f"{pair['t_p']:.3g}",
            f"{m['a_only']} / {m['b_only']}",
            f"{m['p_value']:.3g}",
        )
    console.print(table)
    table = Table(title="Soft targets of each hop (top-k plus the rest, over the reasoning set's positions)")
    for col in ("targets of", "entropy (nats)", "top-1 probability", "positions with top-1 < 0.5"):
        table.add_column(col, justify="left" if col == "targets of" else "right")
    for name, info in sharpness.items():
        table.add_row(name, f"{info['entropy']:.3f}", f"{info['top1']:.3f}", _pct(info["top1_below_half"]))
    console.print(table)
    means = {name: statistics.mean(summary[name]["hard"]) for name in RECIPES}
    best = max(means.values())
    # Recipes within one hard item of the best mean are tied with it: nothing tells them apart.
    top = [name for name in RECIPES if best - means[name] <= 1 / max(len(hard_items), 1) + 1e-12]
    winner = top[0] if len(top) == 1 else "tie: " + ", ".join(top)
    console.print(f"highest mean on hard items (within one item): {winner} ({_pct(best)})")

    ordered = {}
    for seed in seeds:
        mid, ttm = mids[seed]["concluded"]["all"], per_seed["2-step KD"][seed]["concluded"]["all"]
        ordered[seed] = _ordered(teacher_concluded, mid, ttm)
        console.print(
            f"seed {seed}, gold value concluded, all items but card items: teacher {_pct(teacher_concluded)} >= "
            f"mid {_pct(mid)} >= TTM (2-step) {_pct(ttm)} (2-point margin): "
            f"{'HOLDS' if ordered[seed] else 'DOES NOT HOLD'}"
        )
    return {
        "student_steps": steps,
        "accuracy": summary,
        "pairs": pairs,
        "winner": winner,
        "seconds": seconds,
        "mid_concluded": {s: m["concluded"] for s, m in mids.items()},
        "target_sharpness": sharpness,
        "ordered": ordered,
    }


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4], help="no seeds: part 1 only")
    parser.add_argument("--student-steps", type=int, help="the TTM's steps per recipe (default: the config's)")
    parser.add_argument("--work", type=Path, default=Path("runs/distillation"), help="where part 2's hops are kept")
    parser.add_argument("--live", action="store_true", help="also the first seed's one-step hop with the live teacher")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.student_steps is not None and args.student_steps < 1:
        sys.exit(f"--student-steps must be a positive number of steps, not {args.student_steps}.")
    cfg = load_config(args.config)
    pipe = Pipeline(cfg)
    needed = [pipe.finetune_dir("base"), pipe.finetune_dir("teacher"), pipe.root / "distill" / "ttm"]
    missing = [str(p) for p in needed if not (p / "manifest.json").is_file()]
    if missing or cfg.world is None or cfg.distill is None:
        sys.exit(f"run `pseudocot run {args.config}` first: {', '.join(missing) or 'world/distill section'} missing.")
    steps = args.student_steps or cfg.distill.ttm.max_steps
    records = world_split(pipe.world_dir, args.split)
    base = str(pipe.finetune_dir("base") / "merged")
    easy, hard = cfg.world.easy_max_steps, cfg.world.hard_min_steps
    figures = {"part1": part1(pipe, records, base, easy, hard)}
    if args.seeds:
        teacher = figures["part1"]["results"]["teacher (fine-tuned)"]["concluded"]["all"]
        figures["part2"] = part2(pipe, records, base, easy, hard, args.seeds, steps, args.work, args.live, teacher)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
