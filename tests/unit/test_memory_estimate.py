"""The memory estimate printed before a stage on a GPU, against its arithmetic done by hand."""

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from pseudocot import pipeline
from pseudocot.memory import FP32, GIB, NF4_BYTES, Estimate, Shape, inference, memory_line, training
from pseudocot.runners import Job

# 2 layers, width 8, MLP 16, 2 heads of 4 (one key/value head), 10 tokens: q (8, 8), k and v (8, 4), o (8, 8),
# gate and up (8, 16), down (16, 8).
SMALL = Shape(layers=2, hidden=8, intermediate=16, heads=2, kv_heads=1, head_dim=4, vocab=10, tied=False)
PROJECTIONS = 2 * (64 + 32 + 32 + 64 + 128 + 128 + 128)  # 1152
PARAMETERS = PROJECTIONS + 2 * 10 * 8 + 5 * 8  # embeddings and head, 2 norms a layer and the last: 1352


@pytest.mark.parametrize("tied", [False, True])
def test_the_parameters_read_off_a_config_are_the_models(tied):
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=300,
        tie_word_embeddings=tied,
    )
    assert Shape.of(config).parameters == LlamaForCausalLM(config).num_parameters()


def test_weights_and_trainable_parameters():
    assert SMALL.linear == PROJECTIONS and SMALL.parameters == PARAMETERS
    assert SMALL.weight_bytes(2) == 2 * PARAMETERS
    assert SMALL.weight_bytes(2, four_bit=True) == PROJECTIONS * NF4_BYTES + (PARAMETERS - PROJECTIONS) * 2
    assert round(NF4_BYTES, 4) == 0.5159  # 4 bits, and the double-quantized block scales
    assert SMALL.trainable("full") == PARAMETERS
    assert SMALL.trainable("qk_full") == 2 * (64 + 32)
    assert SMALL.trainable("lora", ("q_proj", "down_proj"), rank=4) == 2 * 4 * ((8 + 8) + (16 + 8))
    assert SMALL.kv_bytes(tokens=5, dtype_bytes=2) == 2 * 2 * 1 * 4 * 5 * 2


def test_a_training_step_by_hand():
    tokens, trainable = 3, 100
    layer = (8 * 8 + 4 * 16) * tokens * 2  # one layer's kept activations in bf16: 768
    lora = training(SMALL, tokens, weights=1000.0, trainable=trainable, adapter=True, dtype_bytes=2)
    assert lora.parts == {
        "weights": 1000 + trainable * FP32,  # the adapter's float32 weights beside the model's
        "gradients": trainable * FP32,
        "optimizer": 2 * FP32 * trainable,  # AdamW's two moments
        "activations": 2 * layer,
        "logits": 2 * tokens * 10 * FP32,  # float32 logits and their gradient
    }
    assert lora.total == sum(lora.parts.values())
    full = training(SMALL, tokens, 1000.0, trainable, adapter=False, dtype_bytes=2, checkpointing=True)
    assert full.parts["weights"] == 1000 and full.parts["gradients"] == trainable * 2
    assert full.parts["activations"] == 2 * 8 * tokens * 2 + layer  # each layer's input, and one layer recomputed
    distill = training(SMALL, tokens, 1000.0, trainable, True, 2, teacher_weights=500.0)
    assert distill.parts["weights"] == 1000 + 500 + trainable * FP32
    assert distill.parts["logits"] == 3 * tokens * 10 * FP32  # the teacher's log-probabilities too


def test_generation_by_hand():
    wide = Shape(layers=4, hidden=8, intermediate=16, heads=2, kv_heads=2, head_dim=4, vocab=50, tied=True)
    estimate = inference([(SMALL, 100.0), (wide, 200.0)], rows=6, context=7, dtype_bytes=2)
    assert estimate.parts == {
        "weights": 300.0,
        "key/value cache": 2 * 4 * 2 * 4 * 6 * 7 * 2,  # the model with the widest cache per token
        "logits": 6 * 50 * FP32,
    }


def test_the_line_says_when_the_estimate_is_over_the_gpus_memory():
    estimate = Estimate({"weights": 3 * GIB, "activations": GIB})
    line = memory_line("finetune base", estimate, "NVIDIA H200", 140 * GIB)
    assert line == (
        "finetune base: memory estimate about 4.00 GiB at peak (weights 3.00, activations 1.00 GiB), "
        "of 140.0 GiB on NVIDIA H200"
    )
    assert "more than the GPU holds" in memory_line("x", estimate, "a small GPU", 2 * GIB)


def test_the_estimate_is_printed_before_the_stage_on_a_gpu_only(monkeypatch, capsys):
    def printed() -> str:  # the console writes to stderr, wrapped
        return " ".join(capsys.readouterr().err.split())

    done = []
    job = Job({}, lambda out: done.append(out) or {}, memory=lambda: Estimate({"weights": GIB}))
    monkeypatch.setattr(pipeline, "_gpu", lambda: None)
    pipeline._announced("router", job)("out")
    assert "memory estimate" not in printed()
    monkeypatch.setattr(pipeline, "_gpu", lambda: ("NVIDIA H200", 140 * GIB))
    pipeline._announced("router", job)("out")
    assert "router: memory estimate about 1.00 GiB at peak" in printed() and done == ["out", "out"]

    def unreachable():
        raise OSError("meta-llama/Llama-3.1-8B is not reachable")

    pipeline._announced("eval", Job({}, job.work, memory=unreachable))("out")
    assert "eval: no memory estimate (meta-llama/Llama-3.1-8B is not reachable)" in printed()
    assert pipeline._announced("data", Job({}, job.work)) is job.work  # a stage that runs no model
