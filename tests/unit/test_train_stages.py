"""Fine-tune and distillation on a model whose tokenizer has no pad token (as Llama 3's), run from
relative paths: one step each, then the adapter reloaded by plain PEFT from another directory."""

import copy
import json
from pathlib import Path

import pytest
from peft import AutoPeftModelForCausalLM

from pseudocot.config import DistillHopConfig, FinetuneRunConfig, LoraConfig
from pseudocot.train.distill import distill
from pseudocot.train.finetune import finetune

ROWS = [
    ("<|begin_of_text|>Question? ", "The answer is 7.<|eot_id|>"),
    ("<|begin_of_text|>Another question, longer than the first? ", "7<|eot_id|>"),
]
SHORT = {"max_steps": 1, "per_device_train_batch_size": 2, "max_seq_length": 64}


@pytest.fixture
def padless_workdir(tmp_path, random_llama, tokenizer, monkeypatch):
    """A working directory holding ``zoo/tiny`` (a model whose tokenizer has no pad token) and
    ``data`` (its tokenizer and the two training files), entered."""
    padless = copy.deepcopy(tokenizer)
    padless.pad_token = None
    random_llama.config.pad_token_id = None
    for directory in (tmp_path / "zoo" / "tiny", tmp_path / "data" / "tokenizer"):
        padless.save_pretrained(directory)
    random_llama.save_pretrained(tmp_path / "zoo" / "tiny")
    lines = "".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in ROWS)
    for target in ("answer", "reasoning"):
        (tmp_path / "data" / f"{target}_train.jsonl").write_text(lines)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _reload_from_elsewhere(adapter: Path, workdir: Path, monkeypatch) -> None:
    monkeypatch.chdir(workdir / "elsewhere")
    AutoPeftModelForCausalLM.from_pretrained(adapter)
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == str(workdir / "zoo" / "tiny")


def test_finetune_trains_without_a_pad_token_and_its_adapter_loads_anywhere(padless_workdir, monkeypatch):
    run = FinetuneRunConfig(model="zoo/tiny", target="answer", lora=LoraConfig(r=4, alpha=8), **SHORT)
    metrics = finetune("base", run, "zoo/tiny", Path("data"), Path("out"))
    assert metrics["examples"] == 2 and metrics["train_loss"] > 0
    _reload_from_elsewhere(padless_workdir / "out" / "adapter", padless_workdir, monkeypatch)


@pytest.mark.parametrize("teacher_logits", ["online", "cached"])
def test_distill_trains_without_a_pad_token_and_its_adapter_loads_anywhere(
    padless_workdir, monkeypatch, teacher_logits
):
    hop = DistillHopConfig(student="zoo/tiny", teacher_logits=teacher_logits, top_k=8, **SHORT)
    metrics = distill("mid", hop, "zoo/tiny", "zoo/tiny", Path("data"), Path("out"))
    assert metrics["examples"] == 2 and metrics["train_loss"] > 0
    _reload_from_elsewhere(padless_workdir / "out" / "adapter", padless_workdir, monkeypatch)
