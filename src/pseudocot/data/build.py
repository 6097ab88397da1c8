"""Data formation (paper 4.1): load every source, merge with a stratified shuffle, chat-format.

Run with ``pseudocot data CONFIG``. Output directory layout::

    {split}.jsonl              merged records (record schema), stratified by source
    answer_{split}.jsonl       task set: {"id", "prompt", "completion"}, the base's answer as target
    reasoning_{split}.jsonl    reasoning set: the same, the reasoning as target (records that have it)
    bad_rows.txt               every skipped row with its file and line (when there are any)
    tokenizer/                 the tokenizer whose chat template formatted the prompts

Prompts and completions are text rendered with the tokenizer's chat template (``prompt +
completion`` is the whole conversation), the prompt-completion layout TRL's SFTTrainer reads.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from pseudocot import prompts
from pseudocot.config import DataConfig, ProtocolConfig
from pseudocot.data.loaders import load_source
from pseudocot.data.mix import stratified_shuffle
from pseudocot.errors import PseudoCoTError
from pseudocot.models import load_tokenizer
from pseudocot.progress import console, track
from pseudocot.records import Record, write_jsonl


def prompt_completion(
    tokenizer: PreTrainedTokenizerBase, record: Record, target: str, protocol: ProtocolConfig
) -> dict[str, str]:
    """One chat-formatted training example: the prompt text and the completion that follows it.

    ``target`` is ``"answer"`` (the base's task set) or ``"reasoning"`` (the teacher's and TTM's).
    """
    if target == "answer":
        messages = prompts.base_messages(record, one_shot=protocol.one_shot, style=protocol.answer_style)
        completion = prompts.format_answer(record, style=protocol.answer_style)
    else:
        messages = prompts.reasoning_messages(record, protocol.one_shot, protocol.answer_style)
        completion = record.reasoning or ""
    prompt = prompts.render(tokenizer, messages)
    full = prompts.render(tokenizer, messages, completion=completion)
    if not full.startswith(prompt):
        raise PseudoCoTError("the tokenizer's chat template renders a conversation differently from its prefix.")
    return {"id": record.id, "prompt": prompt, "completion": full[len(prompt) :]}


def chat_tokenizer(name: str, world_dir: Path | None) -> PreTrainedTokenizerBase:
    """The tokenizer for chat formatting: the world's, or any local path or hub id with a chat template."""
    tokenizer = load_tokenizer(str(Path(world_dir) / "tokenizer") if name == "world" and world_dir else name)
    if not tokenizer.chat_template:
        raise PseudoCoTError(f"tokenizer {name!r} has no chat template; use an instruct model's tokenizer.")
    return tokenizer


def form_data(cfg: DataConfig, protocol: ProtocolConfig, out: Path, world_dir: Path | None = None) -> dict[str, Any]:
    """Writes the merged and formatted splits into ``out``; returns counts as metrics."""
    tokenizer = chat_tokenizer(cfg.tokenizer, world_dir)
    tokenizer.save_pretrained(out / "tokenizer")
    metrics: dict[str, Any] = {}
    bad_rows: list[str] = []
    for split in cfg.splits:
        groups, split_bad = [], []
        for src in cfg.sources:
            loaded = load_source(src, split, world_dir)
            split_bad += loaded.bad_rows
            if loaded.records:
                groups.append(loaded.records)
        bad_rows += split_bad
        if not groups and split_bad:
            shown = "; ".join(split_bad[:2])
            raise PseudoCoTError(f"every row of the {split} split was bad ({len(split_bad)} rows, e.g. {shown}).")
        merged = stratified_shuffle(groups, seed=cfg.seed) if groups else []
        write_jsonl(merged, out / f"{split}.jsonl")
        for target in ("answer", "reasoning"):
            rows = [r for r in merged if target == "answer" or r.reasoning]
            with open(out / f"{target}_{split}.jsonl", "w", encoding="utf-8") as f:
                for record in track(rows, f"format {target} {split}"):
                    f.write(json.dumps(prompt_completion(tokenizer, record, target, protocol)) + "\n")
        metrics[f"{split}_records"] = len(merged)
        metrics[f"{split}_by_source"] = dict(Counter(r.source for r in merged))
    if not metrics.get("train_records") and "train" in cfg.splits:
        raise PseudoCoTError("the sources hold no train records; check data.sources (paths, subjects, splits).")
    metrics["bad_rows"] = len(bad_rows)
    if bad_rows:
        (out / "bad_rows.txt").write_text("\n".join(bad_rows) + "\n")
        shown = "\n  ".join(bad_rows[:5])
        console.print(f"[yellow]skipped {len(bad_rows)} bad rows (all in bad_rows.txt):[/]\n  {shown}")
    return metrics
