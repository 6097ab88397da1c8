"""Fine-tune and distillation on a model whose tokenizer has no pad token (as Llama 3's), run from
relative paths: one step each, then the adapter reloaded by plain PEFT from another directory."""

import copy
import json
from pathlib import Path

import pytest
from peft import AutoPeftModelForCausalLM

from pseudocot import runners
from pseudocot.config import (
    DistillHopConfig,
    FinetuneRunConfig,
    LoraConfig,
    ZooConfig,
    ZooModelConfig,
    load_config,
    section_hash,
    to_data,
)
from pseudocot.graph import Run
from pseudocot.models import load_tokenizer
from pseudocot.train.distill import distill
from pseudocot.train.finetune import finetune
from pseudocot.world.zoo import PackedBlocks, pretrain, read_corpus

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


@pytest.fixture
def checkpointing(monkeypatch):
    """Records, for each model a training stage trains, whether it recomputed activations (gradient
    checkpointing on) when its training ended."""
    from pseudocot.train import trainer

    seen: list[bool] = []
    train = trainer.train

    def spy(model, *args, **kwargs):
        result = train(model, *args, **kwargs)
        seen.append(model.is_gradient_checkpointing)
        return result

    for module in ("pseudocot.train.finetune", "pseudocot.train.distill", "pseudocot.world.zoo"):
        monkeypatch.setattr(f"{module}.train", spy)
    return seen


@pytest.mark.parametrize("on", [True, False])
def test_gradient_checkpointing_is_an_option_of_every_training_stage(padless_workdir, checkpointing, world_dir, on):
    options = {**SHORT, "gradient_checkpointing": on}
    finetune(
        "base", FinetuneRunConfig(model="zoo/tiny", target="answer", **options), "zoo/tiny", Path("data"), Path("f")
    )
    distill(
        "mid",
        DistillHopConfig(student="zoo/tiny", trainable="qk_full", **options),
        "zoo/tiny",
        "zoo/tiny",
        Path("data"),
        Path("d"),
    )
    model = ZooModelConfig(
        stands_for="tiny",
        corpus="base",
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=32,
        max_steps=1,
        batch_size=2,
        learning_rate=1e-3,
    )
    zoo = ZooConfig(models={"tiny": model}, block_size=32, gradient_checkpointing=on)
    blocks = PackedBlocks(read_corpus(world_dir, "base")[:20], load_tokenizer(world_dir / "tokenizer"), zoo.block_size)
    pretrain("tiny", model, zoo, world_dir, Path("z"), blocks)
    assert checkpointing == [on, on, on]  # finetune, distill, zoo


def test_gradient_checkpointing_does_not_key_a_training_stage(tmp_path):
    # It trades time for memory and trains the same weights: turning it on for a bigger machine reruns nothing.
    def keys(overrides):
        cfg = load_config("configs/tiny.yaml", [f"run_dir={tmp_path}", "zoo.snapshot=null", *overrides])
        run = Run(cfg)
        jobs = [runners.finetune(run, "base"), runners.distill(run, "mid"), runners.zoo(run, "tiny-1b")]
        return [section_hash(to_data(job.config)) for job in jobs]

    on = ["finetune.base.gradient_checkpointing=true", "distill.mid.gradient_checkpointing=true"]
    on += ["distill.mid.logits=targets"]  # the head on target positions only: the same loss, less memory
    assert keys([]) == keys([*on, "zoo.gradient_checkpointing=true"])
    assert keys(["finetune.base.max_steps=7"])[0] != keys([])[0]  # a setting that changes the weights does


def test_a_scoring_router_keeps_the_stage_key_it_had_before_its_regime_was_a_setting(tmp_path):
    # The tiny world scores options everywhere: its router stays up to date; written answers key another router.
    def key(overrides):
        run = Run(load_config("configs/tiny.yaml", [f"run_dir={tmp_path}", *overrides]))
        return section_hash(to_data(runners.router(run, "").config))

    run = Run(load_config("configs/tiny.yaml", [f"run_dir={tmp_path}"]))
    cfg = run.cfg
    before = section_hash(to_data({"router": cfg.router, "protocol": cfg.protocol, "decoding": cfg.decoding}))
    assert key([]) == before and runners.rollout_regime(cfg) == ("score", "eval")
    written = key(["eval.answer_mode=generate"])
    assert written != before
    assert key(["eval.answer_mode=generate", "router.preset=base"]) != written
    assert key(["router.answer_mode=generate"]) != before
