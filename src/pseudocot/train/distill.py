"""Knowledge distillation, one hop per run (paper 2, 4.2.2, 5): ``pseudocot distill CONFIG``.

The two-step distillation is this one recipe run twice by the pipeline: the fine-tuned teacher into
the mid model, then the mid model into the Tiny Thought Model. The student learns the reasoning set
with the loss of :mod:`pseudocot.train.losses` (cross-entropy mixed with a temperature-scaled
divergence, reverse KL by default), computed in an overridden ``Trainer.compute_loss``.

What the student trains is a choice (``trainable``): the paper's query and key projections only,
through LoRA (``qk_lora``) or in full (``qk_full``); LoRA on more modules (``lora``); or all weights
(``full``). The teacher runs alongside the student (``teacher_logits: online``) or its top-k
log-probabilities are computed once into a sharded cache and read back (``cached``; see
:mod:`pseudocot.train.teacher_cache`). The output directory holds the student as a plain model
(LoRA merged in), with its tokenizer, ready to be the next hop's teacher or the system's TTM; a
LoRA run also keeps ``adapter/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from pseudocot.config import DistillHopConfig
from pseudocot.models import check_same_tokenizer, load_model, load_tokenizer, pad_id
from pseudocot.stage import is_main_process
from pseudocot.train.losses import IGNORE_INDEX, TopK, distillation_loss
from pseudocot.train.sft import PromptCompletionDataset, pad_collate
from pseudocot.train.teacher_cache import CachedTeacherDataset, build_cache, topk_collate
from pseudocot.train.trainer import StageTrainer, run_arguments, train, with_lora

QK_MODULES = ("q_proj", "k_proj")


class DistillationTrainer(StageTrainer):
    """A Trainer whose loss is :func:`distillation_loss` against a frozen teacher run alongside,
    or against the cached top-k the collator puts in each batch (``teacher=None``)."""

    # The loss is divided by the accumulated batch's count of target tokens, so the Trainer must not
    # divide it again by the number of accumulation steps.
    loss_is_scaled_for_ga = True

    def __init__(
        self, *args: Any, teacher: PreTrainedModel | None, hop: DistillHopConfig, vocab_size: int, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None
        self.hop = hop
        self.vocab_size = vocab_size

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Position i predicts token i + 1: positions 0..T-2 against labels 1..T-1.
        labels = inputs["labels"][:, 1:]  # (B, T-1)
        forward = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
        if self.hop.logits == "targets":
            # Only the positions that predict a counted token in some row: the head runs there alone.
            keep = (labels != IGNORE_INDEX).any(0).nonzero().squeeze(-1)  # (K,)
            forward["logits_to_keep"] = keep
            labels = labels[:, keep]  # (B, K)
        else:
            keep = slice(0, labels.shape[1])
        outputs = model(**forward)
        # Embedding rows past the tokenizer's length are padding rows a model may have, trimmed here.
        student = outputs.logits[:, : labels.shape[1], : self.vocab_size]  # (B, T-1 or K, V)
        if "topk_indices" in inputs:
            # (B, T-1 or K, k)
            teacher: torch.Tensor | TopK = TopK(inputs["topk_indices"][:, keep], inputs["topk_logprobs"][:, keep])
        elif self.teacher is None:
            teacher = student.detach()  # alpha = 1, plain SFT: the divergence term has weight 0
        else:
            with torch.no_grad():
                teacher_logits = self.teacher.to(outputs.logits.device)(**forward).logits
            teacher = teacher_logits[:, : labels.shape[1], : self.vocab_size]  # (B, T-1 or K, V)
        out = distillation_loss(
            student,
            teacher,
            labels,
            alpha=self.hop.alpha,
            temperature=self.hop.temperature,
            kind=self.hop.divergence,
            beta=self.hop.beta,
            num_items=num_items_in_batch,
        )
        loss = out["loss"]
        if num_items_in_batch is None:
            # Without the accumulated batch's token count the loss is this micro-batch's mean:
            # divide by the accumulation steps, as the Trainer would.
            loss = loss / self.args.gradient_accumulation_steps
        elif self.args.average_tokens_across_devices:
            # num_items_in_batch counts every process's tokens and DDP averages gradients over
            # processes, so each process's share is scaled back up (as Trainer.compute_loss does).
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss


def select_trainable(model: PreTrainedModel, hop: DistillHopConfig) -> PreTrainedModel:
    """Wraps or freezes ``model`` so that only what ``hop.trainable`` names is trained."""
    if hop.trainable in ("qk_lora", "lora"):
        targets = list(QK_MODULES) if hop.trainable == "qk_lora" else hop.lora.target_modules
        return with_lora(model, hop.lora, targets)
    for name, param in model.named_parameters():
        param.requires_grad = hop.trainable == "full" or any(f".{m}." in name for m in QK_MODULES)
    return model


def distill(
    name: str,
    hop: DistillHopConfig,
    teacher_ref: str,
    student_ref: str,
    data_dir: Path,
    out: Path,
    cache_dir: Path | None = None,
    cache_key: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Distils ``teacher_ref`` into ``student_ref`` on the reasoning set; writes the student into ``out``.

    With ``hop.teacher_logits == "cached"``, the teacher's top-k goes to ``cache_dir`` (default
    ``out/teacher_topk``), identified by ``cache_key``, and is reused by any later run with the same key.
    """
    tokenizer = load_tokenizer(student_ref)
    check_same_tokenizer(load_tokenizer(teacher_ref), tokenizer, f"teacher {teacher_ref}", f"student {student_ref}")
    check_same_tokenizer(load_tokenizer(str(Path(data_dir) / "tokenizer")), tokenizer, "the data stage", student_ref)
    dataset = PromptCompletionDataset(Path(data_dir) / "reasoning_train.jsonl", tokenizer, hop.max_seq_length)
    torch.manual_seed(hop.seed)
    # With alpha = 1 the loss is cross-entropy alone (plain SFT of the student): no teacher is run.
    sft_only = hop.alpha == 1.0
    teacher: PreTrainedModel | None = None if sft_only else load_model(teacher_ref, bf16=hop.bf16)
    pad = pad_id(tokenizer)
    train_set, collate, cache = dataset, pad_collate(pad), {}
    if hop.teacher_logits == "cached" and not sft_only:
        cache_dir = Path(cache_dir or out / "teacher_topk")
        key = {**(cache_key or {"teacher": teacher_ref}), "max_seq_length": hop.max_seq_length}
        cache = build_cache(
            teacher,
            dataset.examples,
            cache_dir,
            key,
            pad,
            len(tokenizer),
            hop.top_k,
            hop.cache_shard_size,
            hop.per_device_train_batch_size,
        )
        teacher = None  # freed: the student trains against the cache alone
        train_set = CachedTeacherDataset(dataset.examples, cache_dir, hop.cache_shard_size)
        collate = topk_collate(pad)
    student = select_trainable(load_model(student_ref, bf16=hop.bf16), hop)
    trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
    result = train(
        student,
        run_arguments(hop, out / "checkpoints"),
        train_set,
        collate,
        f"distill {name}",
        trainer_cls=DistillationTrainer,
        teacher=teacher,
        hop=hop,
        vocab_size=len(tokenizer),
    )
    if hop.trainable in ("qk_lora", "lora"):
        if is_main_process():
            student.save_pretrained(out / "adapter")
        student = student.merge_and_unload()
    if is_main_process():
        student.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return {
        "teacher": None if sft_only else teacher_ref,
        "student": student_ref,
        "examples": len(dataset),
        "trainable_parameters": trainable,
        "parameters": student.num_parameters(),
        **result.metrics(),
        "teacher_logits": hop.teacher_logits,
        **({f"cache_{k}": v for k, v in cache.items()}),
    }
