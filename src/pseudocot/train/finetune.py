"""Supervised (Q)LoRA fine-tuning (paper 4.2.1 and 4.2.2): ``pseudocot finetune CONFIG``.

Used twice: the **base** on the task set (question -> answer) and the **teacher** on the reasoning
set (question -> reasoning). The loss covers the assistant's tokens only. Output directory::

    adapter/    the LoRA adapter as PEFT saves it (PeftModel.from_pretrained loads it), with tokenizer
    merged/     the adapter merged into 16/32-bit base weights (never into 4-bit ones), with tokenizer

``method: full`` trains every weight instead and writes only ``merged/``: for models so small that
an adapter limits what they can learn (the tiny world's teacher), not the paper's recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, prepare_model_for_kbit_training
from torch.utils.data import ConcatDataset

from pseudocot.config import FinetuneRunConfig
from pseudocot.errors import PseudoCoTError
from pseudocot.models import check_same_tokenizer, load_model, load_tokenizer, pad_id
from pseudocot.progress import console
from pseudocot.stage import is_main_process
from pseudocot.train.sft import PromptCompletionDataset, pad_collate
from pseudocot.train.trainer import run_arguments, train, with_lora


def finetune(
    name: str, run: FinetuneRunConfig, model_ref: str, data_dir: Path, out: Path, traces_dir: Path | None = None
) -> dict[str, Any]:
    """Fine-tunes ``model_ref`` with LoRA on the data stage's ``{target}_train.jsonl``; writes ``out``.

    A reasoning fine-tune with ``reasoning: traces`` trains on the synth traces stage's accepted
    traces (``traces_dir``) instead, and with ``both`` on the two sets together.
    """
    tokenizer = load_tokenizer(model_ref)
    check_same_tokenizer(load_tokenizer(str(Path(data_dir) / "tokenizer")), tokenizer, "the data stage", model_ref)
    files = [Path(data_dir) / f"{run.target}_train.jsonl"]
    if run.target == "reasoning" and run.reasoning != "gold":
        if traces_dir is None:
            raise PseudoCoTError(f"finetune.{name}.reasoning: {run.reasoning} needs the synth traces stage's output.")
        traces = traces_dir / "reasoning_train.jsonl"
        if traces.is_file() and traces.stat().st_size == 0:
            if run.reasoning == "traces":
                raise PseudoCoTError(
                    f"the synth traces stage kept no trace, so finetune.{name} has nothing to learn from; "
                    "sample more traces (synth.traces.samples) or use reasoning: gold."
                )
            console.print("[yellow]the synth traces stage kept no trace; the teacher learns from gold alone.[/]")
        else:
            files = [traces] + (files if run.reasoning == "both" else [])
    dataset = ConcatDataset([PromptCompletionDataset(f, tokenizer, run.max_seq_length) for f in files])
    torch.manual_seed(run.seed)
    model = load_model(model_ref, run.load_in_4bit, run.bf16, key=f"finetune.{name}.load_in_4bit")
    if run.load_in_4bit:
        model = prepare_model_for_kbit_training(model)
    if run.method == "lora":
        model = with_lora(model, run.lora)
        trainable, total = model.get_nb_trainable_parameters()
    else:
        trainable = total = model.num_parameters()
    result = train(
        model, run_arguments(run, out / "checkpoints"), dataset, pad_collate(pad_id(tokenizer)), f"finetune {name}"
    )
    if is_main_process() and run.method == "full":
        model.save_pretrained(out / "merged")
        tokenizer.save_pretrained(out / "merged")
    elif is_main_process():
        model.save_pretrained(out / "adapter")
        tokenizer.save_pretrained(out / "adapter")
        if run.load_in_4bit:
            # Merge into the 16-bit base, never into quantized weights.
            merged = PeftModel.from_pretrained(load_model(model_ref, bf16=True), out / "adapter").merge_and_unload()
        else:
            merged = model.merge_and_unload()
        merged.save_pretrained(out / "merged")
        tokenizer.save_pretrained(out / "merged")
    return {
        "model": model_ref,
        "target": run.target,
        "method": run.method,
        "reasoning": run.reasoning if run.target == "reasoning" else None,
        "examples": len(dataset),
        "trainable_parameters": trainable,
        "parameters": total,
        **result.metrics(),
    }
