"""The distillation stage: both hops on the micro world, trainable selection, the Trainer's loss."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from pseudocot.config import DistillHopConfig
from pseudocot.train.distill import select_trainable


def test_both_hops_write_a_plain_student_chained_to_its_teacher(micro_run):
    _, run, _ = micro_run
    mid, ttm = run / "distill" / "mid", run / "distill" / "ttm"
    for out in (mid, ttm):
        assert (out / "model.safetensors").is_file()
        assert AutoModelForCausalLM.from_pretrained(out).__class__.__name__ == "LlamaForCausalLM"
    assert (mid / "adapter" / "adapter_config.json").is_file() and not (ttm / "adapter").exists()
    mid_manifest = json.loads((mid / "manifest.json").read_text())
    ttm_manifest = json.loads((ttm / "manifest.json").read_text())
    assert mid_manifest["metrics"]["teacher_logits"] == "cached" and mid_manifest["metrics"]["cache_shards"] >= 1
    assert (run / "cache" / "teacher_topk" / "mid" / "index.json").is_file()
    assert ttm_manifest["metrics"]["trainable_parameters"] == ttm_manifest["metrics"]["parameters"]
    assert mid_manifest["metrics"]["teacher"].endswith("finetune/teacher/merged")
    assert ttm_manifest["metrics"]["teacher"] == str(mid)
    assert 0 < mid_manifest["metrics"]["trainable_parameters"] < mid_manifest["metrics"]["parameters"]


def test_qk_only_changes_nothing_but_q_and_k(micro_run):
    _, run, _ = micro_run
    before = load_file(run / "zoo" / "tiny-3b" / "model.safetensors")
    after = load_file(run / "distill" / "mid" / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".q_proj." in k or ".k_proj." in k for k in changed)


@pytest.mark.parametrize(
    ("trainable", "expected"),
    [
        ("qk_full", {"q_proj", "k_proj"}),
        ("full", None),
        ("lora", {"lora_A", "lora_B"}),
        ("qk_lora", {"lora_A", "lora_B"}),
    ],
)
def test_select_trainable(micro_run, trainable, expected):
    _, run, _ = micro_run
    model = AutoModelForCausalLM.from_pretrained(run / "zoo" / "tiny-3b")
    hop = DistillHopConfig(student="x", trainable=trainable)
    model = select_trainable(model, hop)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if expected is None:
        assert len(names) == len(list(model.parameters()))
    else:
        assert names and all(any(e in n for e in expected) for n in names)
    if trainable == "qk_lora":
        assert all(".q_proj." in n or ".k_proj." in n for n in names)
