"""The fine-tune stage on the micro world: adapter and merged weights, directions of change."""

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from pseudocot.cli import app
from pseudocot.train.sft import encode_example, pad_collate

from .helpers import copy_run


def test_adapter_changed_base_did_not_and_merge_matches(micro_run):
    _, run, _ = micro_run
    out = run / "finetune" / "base"  # LoRA, as the paper fine-tunes
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (out / "adapter").iterdir()}
    assert (out / "merged" / "model.safetensors").is_file() and not (out / "checkpoints").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert 0 < manifest["metrics"]["trainable_parameters"] < manifest["metrics"]["parameters"]

    zoo = run / "zoo" / "tiny-3b"  # the base of configs/tiny.yaml
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: training moved it

    base = AutoModelForCausalLM.from_pretrained(zoo)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    peft_model = PeftModel.from_pretrained(base, out / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    ids = torch.tensor([[1, 5, 9, 40, 41, 42, 7]])
    with torch.no_grad():
        torch.testing.assert_close(peft_model(ids).logits, merged(ids).logits, atol=1e-4, rtol=1e-4)
        plain = AutoModelForCausalLM.from_pretrained(zoo)(ids).logits
    assert not torch.allclose(plain, merged(ids).logits)  # the fine-tune changed the function
    for key, value in load_file(zoo / "model.safetensors").items():
        torch.testing.assert_close(value, before[key])  # the zoo checkpoint on disk is untouched


def test_full_fine_tune_changes_every_weight_and_writes_no_adapter(micro_run):
    _, run, _ = micro_run
    out = run / "finetune" / "teacher"  # method: full in configs/tiny.yaml
    manifest = json.loads((out / "manifest.json").read_text())["metrics"]
    assert manifest["method"] == "full" and manifest["trainable_parameters"] == manifest["parameters"]
    assert not (out / "adapter").exists()
    before = load_file(run / "zoo" / "tiny-8b" / "model.safetensors")
    after = load_file(out / "merged" / "model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before)


def test_4bit_without_cuda_is_a_clear_error(micro_run, tmp_path):
    config, shared, _ = micro_run
    if torch.cuda.is_available():
        pytest.skip("this machine can load 4-bit")
    run = copy_run(shared, tmp_path / "run", ("world", "zoo", "data"))
    overrides = [f"run_dir={run}", "finetune.base.load_in_4bit=true"]
    result = CliRunner().invoke(app, ["finetune", str(config), "--which", "base", *overrides])
    assert result.exit_code == 1
    assert "finetune.base.load_in_4bit=true needs a CUDA GPU" in result.output
    assert "Traceback" not in result.output


def test_prompt_tokens_carry_no_loss(tokenizer):
    ex = encode_example(tokenizer, "<|begin_of_text|>Question? ", "The answer is 7.<|eot_id|>", max_length=100)
    n_completion = len(tokenizer("The answer is 7.<|eot_id|>", add_special_tokens=False)["input_ids"])
    assert ex["labels"][: len(ex["labels"]) - n_completion] == [-100] * (len(ex["labels"]) - n_completion)
    assert ex["labels"][-n_completion:] == ex["input_ids"][-n_completion:]
    short = encode_example(tokenizer, "<|begin_of_text|>Question? " * 20, "The answer is 7.<|eot_id|>", max_length=12)
    assert len(short["input_ids"]) == 12 and short["labels"][-n_completion:] == ex["labels"][-n_completion:]
    batch = pad_collate(0)([ex, short])
    assert batch["input_ids"].shape == batch["labels"].shape == (2, len(ex["input_ids"]))
    assert (batch["labels"][1, 12:] == -100).all() and (batch["attention_mask"][1, 12:] == 0).all()
