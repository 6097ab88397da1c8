"""Teacher-written traces: generation throughput, what the filter keeps, and a teacher trained on them.

    .venv/bin/python benchmarks/traces.py [--config configs/tiny.yaml] [--speed-questions 16] [--skip-retrain]
        [--seeds 0 1 2]

Needs a finished ``pseudocot run CONFIG`` (the synth traces stage's output and the fine-tuned teacher).

1. **Throughput**: the traces model samples ``k`` traces for ``--speed-questions`` questions, batched
   (the stage's batch size) against one prompt at a time; samples per second, median of 3 runs each.
2. **The filter**: the stage's acceptance rate, and how many accepted traces are faithful: equal to
   the gold explanation, or at least starting from the right number (the answer alone is checked, so
   a trace with a wrong step can reach the gold answer by chance).
3. **Re-fine-tuning** (issue 6's claim): the teacher's fine-tune run again from the same zoo model
   with the same settings on the accepted traces alone (``reasoning: traces``) and on gold plus
   traces (``both``); each teacher's thoughts on the test split are given to the base, and the base's
   accuracy is compared with the pipeline's teacher (trained on gold explanations). With ``--seeds``,
   gold and traces teachers are trained again with each further seed (mean and spread printed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from transformers.utils import logging as hf_logging

from pseudocot.config import load_config
from pseudocot.eval.thoughts import thought_quality
from pseudocot.infer.generate import generate
from pseudocot.infer.thoughts import thought_prompts
from pseudocot.models import load_model, load_tokenizer
from pseudocot.pipeline import Pipeline
from pseudocot.records import read_jsonl
from pseudocot.train.finetune import finetune
from pseudocot.world.build import world_split

console = Console()


def _samples_per_second(model, tokenizer, prompts, preset, batch_size: int) -> float:
    times = []
    for repeat in range(4):  # the first run warms up
        torch.manual_seed(repeat)
        started = time.perf_counter()
        generate(model, tokenizer, prompts, preset, batch_size)
        times.append(time.perf_counter() - started)
    return len(prompts) / statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--speed-questions", type=int, default=16)
    parser.add_argument("--skip-retrain", action="store_true", help="Only parts 1 and 2.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="Fine-tune seeds of part 3.")
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    cfg = load_config(args.config)
    pipe = Pipeline(cfg)
    out = pipe.synth_dir("traces")
    if cfg.synth is None or cfg.synth.traces is None or not (out / "manifest.json").is_file():
        sys.exit(f"run `pseudocot run {args.config}` first (with a synth.traces section): no traces in {out}.")
    traces = cfg.synth.traces
    data_dir = pipe.root / "data"
    questions = list(read_jsonl(data_dir / f"{traces.split}.jsonl"))[: traces.questions]

    # 1. throughput
    model_ref = pipe.resolve_model(traces.model)
    tokenizer, model = load_tokenizer(model_ref), load_model(model_ref).eval()
    prompts = [
        p
        for p in thought_prompts(tokenizer, questions[: args.speed_questions], cfg.protocol)
        for _ in range(traces.samples)
    ]
    batched = _samples_per_second(model, tokenizer, prompts, traces.sampling, traces.batch_size)
    alone = _samples_per_second(model, tokenizer, prompts, traces.sampling, 1)
    console.print(
        f"throughput, {len(prompts)} samples ({args.speed_questions} questions x {traces.samples}), median of 3: "
        f"batched ({traces.batch_size}) {batched:.1f} samples/s, one at a time {alone:.1f} samples/s, "
        f"{batched / alone:.1f}x"
    )

    # 2. the filter
    metrics = pipe.stage("synth", ["traces"])[0].metrics
    gold = {q.id: q for q in questions}
    kept = list(read_jsonl(out / "traces.jsonl"))
    same = sum(r.reasoning == gold[r.id.rsplit("-t", 1)[0]].reasoning for r in kept)
    start = sum(
        r.reasoning.split(".")[0] == (gold[r.id.rsplit("-t", 1)[0]].reasoning or "").split(".")[0] for r in kept
    )
    table = Table(title=f"Traces of {metrics['questions']} {traces.split} questions, {traces.samples} samples each")
    for col in ("acceptance rate", "questions with a kept trace", "distinct kept", "equal to gold", "right first step"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{metrics['acceptance_rate_all']:.1%}",
        f"{metrics['questions_with_a_trace_all']:.1%}",
        str(len(kept)),
        f"{same / max(1, len(kept)):.1%}",
        f"{start / max(1, len(kept)):.1%}",
    )
    console.print(table)
    if args.skip_retrain:
        return

    # 3. re-fine-tuning the teacher on the traces
    run = cfg.finetune.teacher
    world = cfg.world
    test = [r for r in world_split(pipe.world_dir, "test") if r.choices]
    base = pipe.resolve_model(cfg.router.base if cfg.router else cfg.finetune.base.model)
    labels = {"gold": "gold explanations", "traces": "accepted traces only", "both": "gold + accepted traces"}
    hard: dict[str, list[float]] = {name: [] for name in labels}
    table = Table(title=f"The base given each teacher's thoughts ({len(test)} test questions)")
    for col in ("teacher trained on", "seed", "easy", "hard", "all"):
        table.add_column(col, justify="left" if col == "teacher trained on" else "right")
    for seed in args.seeds:
        teachers: dict[str, str] = {}
        with tempfile.TemporaryDirectory() as tmp:
            # Seed 0 is the pipeline's own teacher; "both" once, on the first seed.
            recipes = ["traces", "both"] if seed == args.seeds[0] else ["traces"]
            if seed == run.seed:
                teachers["gold"] = str(pipe.finetune_dir("teacher") / "merged")
            else:
                recipes.insert(0, "gold")
            for reasoning in recipes:
                target = Path(tmp) / reasoning
                target.mkdir()
                started = time.perf_counter()
                settings = run.model_copy(update={"reasoning": reasoning, "seed": seed})
                fitted = finetune("teacher", settings, pipe.resolve_model(run.model), data_dir, target, out)
                console.print(
                    f"seed {seed}, teacher on {reasoning}: {fitted['examples']} examples, "
                    f"{time.perf_counter() - started:.0f} s"
                )
                teachers[reasoning] = str(target / "merged")
            quality = thought_quality(
                base, teachers, test, cfg.protocol, world.easy_max_steps, world.hard_min_steps, cfg.decoding.ttm, 64
            )
        for name, info in quality.items():
            acc = info["accuracy"]
            hard[name].append(acc["hard"])
            table.add_row(labels[name], str(seed), *(f"{acc[k]:.1%}" for k in ("easy", "hard", "all")))
    console.print(table)
    for name, values in hard.items():
        if len(values) > 1:
            console.print(
                f"{labels[name]}: hard {100 * statistics.mean(values):.1f}% +- {100 * statistics.stdev(values):.1f}% "
                f"over seeds {args.seeds}"
            )


if __name__ == "__main__":
    main()
