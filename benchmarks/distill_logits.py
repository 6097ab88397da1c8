"""A distillation step with logits at every position against logits at the target positions only.

    .venv/bin/python benchmarks/distill_logits.py TEACHER STUDENT DATA [--steps 12] [--batch 4]

    # the smol TTM hop of a finished `make real`:
    .venv/bin/python benchmarks/distill_logits.py runs/smol/distill/mid runs/smol/models/smollm2-6l \
        runs/smol/data/reasoning_train.jsonl

One step is what ``DistillationTrainer`` does per batch: the online teacher's forward, the student's
forward, the loss (CE + reverse KL, alpha 0.5) and its backward. Both settings (``distill.<hop>.logits``:
``all`` and ``targets``) run on the same batches, alternating step by step so that the machine's drift
falls on both; the first step of each is a warm-up and not counted. Prints the median step time of each,
their ratio, and the largest difference between the two losses.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from transformers import TrainingArguments

from pseudocot.config import DistillHopConfig
from pseudocot.models import load_model, load_tokenizer, pad_id
from pseudocot.train.distill import DistillationTrainer
from pseudocot.train.sft import PromptCompletionDataset, pad_collate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("teacher")
    parser.add_argument("student")
    parser.add_argument("data", type=Path)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    a = parser.parse_args()

    tokenizer = load_tokenizer(a.student)
    teacher = load_model(a.teacher).eval().requires_grad_(False)
    student = load_model(a.student).train()
    data = PromptCompletionDataset(a.data, tokenizer, a.max_length)
    collate = pad_collate(pad_id(tokenizer))
    batches = [collate([data[(s * a.batch + i) % len(data)] for i in range(a.batch)]) for s in range(a.steps + 1)]
    batches = [{k: v.to(student.device) for k, v in b.items()} for b in batches]
    targets = [int((b["labels"][:, 1:] != -100).any(0).sum()) / (b["labels"].shape[1] - 1) for b in batches]

    times: dict[str, list[float]] = {"all": [], "targets": []}
    losses: dict[str, list[float]] = {"all": [], "targets": []}
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, report_to=[], use_cpu=not torch.cuda.is_available())
        trainers = {
            mode: DistillationTrainer(
                model=student,
                args=args,
                teacher=teacher,
                hop=DistillHopConfig(student=a.student, trainable="full", alpha=0.5, logits=mode),
                vocab_size=len(tokenizer),
            )
            for mode in times
        }
        for step, batch in enumerate(batches):
            for mode, trainer in trainers.items():
                student.zero_grad(set_to_none=True)
                started = time.perf_counter()
                loss = trainer.compute_loss(student, batch, num_items_in_batch=None)
                loss.backward()
                elapsed = time.perf_counter() - started
                if step:
                    times[mode].append(elapsed)
                    losses[mode].append(loss.item())

    median = {mode: statistics.median(t) for mode, t in times.items()}
    gap = max(abs(x - y) for x, y in zip(losses["all"], losses["targets"], strict=True))
    table = Table("logits", "median step (s)", "steps", title=f"{a.student} <- {a.teacher}, batch {a.batch}")
    for mode in times:
        table.add_row(mode, f"{median[mode]:.3f}", str(len(times[mode])))
    console = Console()
    console.print(table)
    console.print(
        f"targets / all: {median['targets'] / median['all']:.2f} of the step time; positions kept per batch: "
        f"median {statistics.median(targets):.2f} of them; largest loss difference {gap:.2e}"
    )


if __name__ == "__main__":
    main()
