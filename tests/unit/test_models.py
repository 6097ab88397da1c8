"""Model loading: the pad id of tokenizers without one, the device and dtype a model is loaded with."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from pseudocot.models import default_device, default_dtype, load_model, pad_id
from pseudocot.train.sft import pad_collate


def test_pad_id_falls_back_to_eos_and_the_collator_masks_it(tokenizer):
    padless = copy.deepcopy(tokenizer)
    padless.pad_token = None
    assert pad_id(tokenizer) == tokenizer.pad_token_id and padless.pad_token_id is None
    assert pad_id(padless) == padless.eos_token_id
    batch = pad_collate(pad_id(padless))(
        [{"input_ids": [7, 8, 9], "labels": [-100, 8, 9]}, {"input_ids": [7], "labels": [7]}]
    )
    assert batch["input_ids"][1].tolist() == [7, padless.eos_token_id, padless.eos_token_id]
    assert batch["attention_mask"][1].tolist() == [1, 0, 0] and batch["labels"][1].tolist() == [7, -100, -100]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_models_load_on_the_cpu_in_float32_as_from_pretrained_does(random_llama, tmp_path):
    random_llama.save_pretrained(tmp_path)
    assert default_device() == torch.device("cpu")
    model = load_model(tmp_path)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    expected = plain.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    ids = torch.tensor([[1, 5, 9, 40]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, plain(ids).logits)


def test_an_explicit_dtype_and_device_are_honoured(random_llama, tmp_path):
    random_llama.save_pretrained(tmp_path)
    model = load_model(tmp_path, dtype=torch.bfloat16, device="cpu")
    assert model.device == torch.device("cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert load_model(tmp_path, bf16=True, dtype=torch.float32, device="cpu").dtype == torch.float32


def test_on_a_gpu_inference_loads_in_bf16_on_this_rank_and_training_as_configured(random_llama, tmp_path, monkeypatch):
    random_llama.save_pretrained(tmp_path)
    loaded: dict = {}
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", staticmethod(lambda src, **kw: loaded.update(kw)))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setenv("LOCAL_RANK", "1")  # the second process of an accelerate launch
    assert default_device() == torch.device("cuda", 1)
    load_model(tmp_path)  # inference: no dtype in the config
    assert loaded == {"dtype": torch.bfloat16, "device_map": {"": torch.device("cuda", 1)}, "trust_remote_code": False}
    load_model(tmp_path, bf16=False)  # a training stage's config asking for float32 gets it
    assert loaded["dtype"] == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)  # a GPU before Ampere
    assert default_dtype(default_device()) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    load_model(tmp_path)
    assert loaded["dtype"] == torch.float32 and loaded["device_map"] == {"": torch.device("cpu")}
