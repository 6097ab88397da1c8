"""The distillation loss with logits at the target positions only equals the one over every position."""

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

from pseudocot.config import DistillHopConfig
from pseudocot.train.distill import DistillationTrainer
from pseudocot.train.losses import IGNORE_INDEX


def _llama(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(cfg)


def _batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(0, 97, (3, 12))
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0  # a right-padded row
    labels = ids.clone()
    labels[0, :5] = labels[1, :7] = labels[2, :6] = IGNORE_INDEX  # prompts carry no loss
    labels[2, 9:] = IGNORE_INDEX
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _loss_and_grads(logits: str, tmp_path, teacher, topk=None):
    student = _llama(0)
    hop = DistillHopConfig(student="s", trainable="full", alpha=0.5, logits=logits)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    trainer = DistillationTrainer(model=student, args=args, teacher=teacher, hop=hop, vocab_size=97)
    inputs = _batch() | (topk or {})
    loss, outputs = trainer.compute_loss(student, inputs, return_outputs=True, num_items_in_batch=None)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in student.named_parameters()}, outputs.logits.shape[1]


@pytest.mark.parametrize("teacher_kind", ["online", "cached top-k", "none (SFT)"])
def test_targets_only_logits_give_the_same_loss_and_gradients(tmp_path, teacher_kind):
    teacher = _llama(3).eval() if teacher_kind == "online" else None
    topk = None
    if teacher_kind == "cached top-k":
        torch.manual_seed(2)
        logprobs = torch.randn(3, 11, 5).log_softmax(-1)
        topk = {"topk_indices": torch.randint(0, 97, (3, 11, 5)), "topk_logprobs": logprobs}
    full, full_grads, full_width = _loss_and_grads("all", tmp_path, copy.deepcopy(teacher), topk)
    kept, kept_grads, kept_width = _loss_and_grads("targets", tmp_path, copy.deepcopy(teacher), topk)
    assert full_width == 12 and kept_width == 7  # positions 4..10 predict a counted token of some row
    torch.testing.assert_close(kept, full, atol=1e-6, rtol=1e-6)
    for name, grad in full_grads.items():
        torch.testing.assert_close(kept_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)
