"""One way to run a Hugging Face Trainer for every training stage: rich progress, checkpoints, resume.

The stages differ in their model, data and loss; how they train (arguments, progress display, where
checkpoints go, resuming after a kill) is the same and lives here.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from rich.progress import Progress
from torch.utils.data import Dataset, Sampler
from transformers import PreTrainedModel, PrinterCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_pt_utils import get_length_grouped_indices

from pseudocot.config import LoraConfig, TrainConfig
from pseudocot.progress import progress_bar
from pseudocot.stage import is_main_process
from pseudocot.train.checkpoints import last_complete_checkpoint


class RichProgressCallback(TrainerCallback):
    """Shows a Trainer's steps and latest loss as a rich progress bar."""

    def __init__(self, description: str) -> None:
        self.description = description
        self._bar: Progress | None = None
        self._task: Any = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._bar = progress_bar()
        self._bar.start()
        self._task = self._bar.add_task(self.description, total=state.max_steps, completed=state.global_step, info="")

    def on_step_end(self, args, state, control, **kwargs):
        if self._bar is not None:
            self._bar.update(self._task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._bar is not None and logs and "loss" in logs:
            self._bar.update(self._task, info=f"loss {logs['loss']:.3f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class EpochLengthGroupedSampler(Sampler[int]):
    """Examples of similar length batched together, in an order drawn afresh each epoch from (seed, epoch).

    The grouping is transformers' (``get_length_grouped_indices``: a shuffle, then sorting by length
    within mega-batches of 50 batches); only the generator differs. Transformers' own
    ``LengthGroupedSampler`` draws from the global random state, which a run resumed mid-epoch does not
    replay; here the Trainer's ``set_epoch`` fixes the order, so a resumed run sees the batches an
    unbroken one would.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.seed, self.epoch = lengths, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class StageTrainer(Trainer):
    """The Trainer of every stage: ``train_sampling_strategy="group_by_length"`` uses
    :class:`EpochLengthGroupedSampler`, with lengths read from the dataset's tokenized ``examples``."""

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy != "group_by_length" or not hasattr(dataset, "examples"):
            return super()._get_train_sampler(train_dataset)
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        lengths = [len(example["input_ids"]) for example in dataset.examples]
        return EpochLengthGroupedSampler(lengths, batch, self.args.data_seed or self.args.seed)


@dataclass
class TrainResult:
    """What a training run reports back to its stage."""

    trainer: Trainer
    train_loss: float
    final_loss: float | None
    seconds: float
    steps_run: int
    resumed_from: str | None

    def metrics(self) -> dict[str, Any]:
        """The figures a training stage records in its manifest: losses, time, processes, where it resumed."""
        return {
            "train_loss": round(self.train_loss, 4),
            "final_loss": round(self.final_loss, 4) if self.final_loss is not None else None,
            "train_seconds": round(self.seconds, 1),
            "processes": self.trainer.accelerator.num_processes,
            "resumed_from": self.resumed_from,
        }


def with_lora(model: PreTrainedModel, lora: LoraConfig, target_modules: list[str] | None = None) -> PeftModel:
    """``model`` wrapped in a LoRA adapter for causal LM training (``target_modules`` defaults to ``lora``'s)."""
    config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules if target_modules is None else target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def training_arguments(checkpoint_dir: Path, **kwargs: Any) -> TrainingArguments:
    """``TrainingArguments`` with the project's defaults: no reporting, rich bar instead of tqdm, CPU if no GPU."""
    defaults: dict[str, Any] = {
        "output_dir": str(checkpoint_dir),
        "save_strategy": "steps",
        "save_total_limit": 1,
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "remove_unused_columns": False,
        "use_cpu": not torch.cuda.is_available(),
        # Non-reentrant: works with frozen embeddings (LoRA, q/k-only training) without making inputs need grads.
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
    }
    defaults["logging_steps"] = max(1, kwargs.get("max_steps", 50) // 50)
    arguments = defaults | kwargs
    if "activation_checkpointing" in TrainingArguments.__dataclass_fields__:
        # Later 5.x releases call gradient checkpointing activation checkpointing and warn on the old names.
        for old in ("gradient_checkpointing", "gradient_checkpointing_kwargs"):
            if old in arguments:
                arguments[old.replace("gradient", "activation")] = arguments.pop(old)
    return TrainingArguments(**arguments)


def run_arguments(run: TrainConfig, checkpoint_dir: Path) -> TrainingArguments:
    """``TrainingArguments`` of a fine-tune or distillation run, from its config section."""
    return training_arguments(
        checkpoint_dir,
        max_steps=run.max_steps,
        per_device_train_batch_size=run.per_device_train_batch_size,
        gradient_accumulation_steps=run.gradient_accumulation_steps,
        learning_rate=run.learning_rate,
        lr_scheduler_type=run.lr_scheduler_type,
        warmup_steps=run.warmup_steps,
        save_steps=run.save_steps,
        bf16=run.bf16,
        gradient_checkpointing=run.gradient_checkpointing,
        train_sampling_strategy="group_by_length" if run.group_by_length else "random",
        seed=run.seed,
    )


def train(
    model: PreTrainedModel,
    args: TrainingArguments,
    dataset: Dataset,
    collator: Any,
    description: str,
    trainer_cls: type[Trainer] = StageTrainer,
    **trainer_kwargs: Any,
) -> TrainResult:
    """Trains ``model`` with ``trainer_cls``, resuming from the newest complete checkpoint in
    ``args.output_dir`` if a killed run left one, and removes the checkpoints when done."""
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        callbacks=[RichProgressCallback(description)],
        **trainer_kwargs,
    )
    trainer.remove_callback(PrinterCallback)  # the rich bar shows progress and loss instead
    resume = last_complete_checkpoint(Path(args.output_dir))
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    resumed_step = int(Path(resume).name.rsplit("-", 1)[-1]) if resume else 0
    if is_main_process():
        shutil.rmtree(args.output_dir, ignore_errors=True)
    return TrainResult(
        trainer=trainer,
        train_loss=float(result.training_loss),
        final_loss=float(losses[-1]) if losses else None,
        seconds=seconds,
        steps_run=args.max_steps - resumed_step,
        resumed_from=resume,
    )
