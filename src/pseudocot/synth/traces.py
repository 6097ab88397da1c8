"""Teacher-written reasoning traces (paper 1.2, 2): ``pseudocot synth traces CONFIG``.

For each question of a split with gold answers, the large model (by default the fine-tuned teacher)
samples ``k`` reasoning traces from the reasoning prompt it was trained on. A trace is **accepted**
when the answer it reaches (read off its concluding sentence by
:func:`pseudocot.infer.choice.reached_choice`, the extraction evaluation uses) is the gold one; the
distinct accepted traces of a question become records of a reasoning set. Output directory::

    traces.jsonl              accepted traces as records (question -> reasoning), ids ``<question>-t<j>``
    reasoning_train.jsonl     the same, chat-formatted as the teacher fine-tune reads them
    acceptance.jsonl          per question: samples, accepted, the option each trace reached
    progress.jsonl            every question's samples as generated (what a resumed run skips)

The manifest holds the acceptance rate (accepted samples / samples), the share of questions with at
least one accepted trace, and both by difficulty where the data has it. Questions are generated a
batch at a time and each batch's samples are appended to ``progress.jsonl`` at once; a killed run,
rerun with the same configuration, skips the batches already there. Each batch's sampling is seeded
from ``seed`` and the batch's position, so a resumed run draws what an unbroken one would.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pseudocot.config import ProtocolConfig, TracesConfig
from pseudocot.data.build import prompt_completion
from pseudocot.errors import PseudoCoTError
from pseudocot.infer.choice import concluding_sentence, reached_choice
from pseudocot.infer.generate import generate
from pseudocot.infer.thoughts import thought_prompts
from pseudocot.models import check_same_tokenizer, load_model, load_tokenizer
from pseudocot.records import LETTERS, Record, write_jsonl
from pseudocot.synth import log_batches, read_log

PROGRESS = "progress.jsonl"


def reaches_gold(trace: str, record: Record) -> tuple[bool, str | None]:
    """Whether a trace reaches the record's gold answer, and what it reaches (a letter, or for a
    free-text record its concluding sentence)."""
    if record.choices:
        index = reached_choice(trace, record.choices)
        return index == record.answer_index, None if index is None else LETTERS[index]
    conclusion = concluding_sentence(trace)
    said = re.search(rf"(?<!\w){re.escape(record.answer.strip())}(?!\w)", conclusion, re.IGNORECASE)
    return said is not None, conclusion or None


def _key(record: Record) -> str:
    """A question's key in the log: ids are unique within a source, not across sources."""
    return f"{record.source}/{record.id}"


def synthesize_traces(
    cfg: TracesConfig,
    protocol: ProtocolConfig,
    model_ref: str,
    records: Sequence[Record],
    data_dir: Path,
    out: Path,
) -> dict[str, Any]:
    """Samples, filters and writes the traces of ``records`` into ``out``; returns the metrics."""
    if not records:
        raise PseudoCoTError("the split has no questions with gold answers to write traces for.")
    tokenizer = load_tokenizer(str(Path(data_dir) / "tokenizer"))
    check_same_tokenizer(load_tokenizer(model_ref), tokenizer, f"the traces model {model_ref}", "the data stage")
    done = {row["key"]: row["samples"] for row in read_log(out / PROGRESS)}
    # Batches are fixed by position; one with any question missing from the log is generated again
    # whole, so a resumed run samples exactly what an unbroken one would.
    batches = [records[s : s + cfg.batch_size] for s in range(0, len(records), cfg.batch_size)]
    todo = [k for k, batch in enumerate(batches) if any(_key(r) not in done for r in batch)]
    started, generated = time.perf_counter(), 0
    if todo:
        model = load_model(model_ref).eval()

        def sample(k: int, batch: Sequence[Record]) -> list[list[str]]:
            torch.manual_seed(cfg.seed * 1_000_003 + k)
            prompts = [p for p in thought_prompts(tokenizer, batch, protocol) for _ in range(cfg.samples)]
            texts = generate(model, tokenizer, prompts, cfg.sampling, cfg.batch_size).texts
            return [texts[j * cfg.samples : (j + 1) * cfg.samples] for j in range(len(batch))]

        todo_batches = [(k, batches[k]) for k in todo]
        generated = log_batches(
            out / PROGRESS, "traces", len(records), done, todo_batches, _key, ("key", "samples"), sample
        )
    seconds = time.perf_counter() - started
    return _write(records, done, cfg, protocol, tokenizer, out) | {
        "generated_questions": generated,
        "resumed_questions": len(records) - generated,
        "questions_per_s": round(generated / seconds, 2) if generated else None,
    }


def _write(records, done, cfg, protocol, tokenizer, out: Path) -> dict[str, Any]:
    accepted_records: list[Record] = []
    groups: dict[str, list[tuple[int, int]]] = defaultdict(list)  # difficulty -> (accepted, samples)
    with open(out / "acceptance.jsonl", "w", encoding="utf-8") as f:
        for record in records:
            samples = done[_key(record)]
            verdicts = [reaches_gold(s, record) for s in samples]
            kept = list(dict.fromkeys(s for s, (ok, _) in zip(samples, verdicts, strict=True) if ok and s.strip()))
            accepted_records += [
                record.model_copy(update={"id": f"{record.id}-t{j}", "reasoning": trace})
                for j, trace in enumerate(kept)
            ]
            hits = sum(ok for ok, _ in verdicts)
            row = {
                "id": record.id,
                "source": record.source,
                "samples": len(samples),
                "accepted": hits,
                "distinct_kept": len(kept),
            }
            f.write(json.dumps(row | {"reached": [r for _, r in verdicts], "gold": record.answer}) + "\n")
            groups["all"].append((hits, len(samples)))
            if record.difficulty is not None:
                groups[f"steps_{record.difficulty}"].append((hits, len(samples)))
    write_jsonl(accepted_records, out / "traces.jsonl")
    with open(out / "reasoning_train.jsonl", "w", encoding="utf-8") as f:
        for record in accepted_records:
            f.write(json.dumps(prompt_completion(tokenizer, record, "reasoning", protocol)) + "\n")
    metrics: dict[str, Any] = {"questions": len(records), "samples_per_question": cfg.samples}
    metrics["accepted_traces"] = len(accepted_records)
    for name, rows in sorted(groups.items()):
        metrics[f"acceptance_rate_{name}"] = round(sum(a for a, _ in rows) / sum(n for _, n in rows), 4)
        metrics[f"questions_with_a_trace_{name}"] = round(sum(a > 0 for a, _ in rows) / len(rows), 4)
    return metrics
