"""Loading models the way a hub model is loaded, whatever their size.

Every model, a tiny-world zoo checkpoint or Llama 3.1 8B, goes through
``AutoModelForCausalLM.from_pretrained``. 4-bit loading (QLoRA) uses bitsandbytes and needs CUDA;
asking for it elsewhere is a clear error, never a silent fallback. Remote code is never run. A local
directory's files are checked first, so a damaged one is a sentence naming it, not a loader's traceback.
Models are placed on :func:`default_device` (this process's GPU where there is one) as they load, in
:func:`default_dtype` unless a training stage's config says otherwise (bfloat16 on a GPU, float32 on the
CPU), so callers move their inputs to ``model.device`` and nothing else.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from pseudocot.errors import PseudoCoTError
from pseudocot.stage import check_safetensors, file_error, read_json

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def check_4bit(key: str) -> None:
    """Raises a one-sentence error unless 4-bit loading can work here (``key`` names the setting)."""
    if not torch.cuda.is_available():
        raise PseudoCoTError(f"{key}=true needs a CUDA GPU (bitsandbytes 4-bit); set {key}=false on this machine.")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise PseudoCoTError(
            f"{key}=true needs the bitsandbytes package; pip install bitsandbytes, or set {key}=false."
        )


def check_model_dir(directory: Path) -> None:
    """Checks a local model directory's config and weights (their headers: cheap at any size).

    Raises:
        PseudoCoTError: naming the file that is missing or damaged, and the command that rewrites it.
    """
    read_json(directory / "config.json", keys=("model_type",))
    weights = sorted(directory.glob("*.safetensors"))
    if not weights and not any(directory.glob("*.bin")):
        raise file_error(directory, "holds no weights (no model.safetensors)")
    for path in weights:
        check_safetensors(path)


def default_device() -> torch.device:
    """Where models run: this process's CUDA GPU (``LOCAL_RANK`` under a distributed launch), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """The weights' dtype where a config does not set one: bfloat16 on a CUDA GPU (float16 on one without
    bfloat16, before Ampere), float32 on the CPU (where bfloat16 matmuls are slow and rounding changes results)."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def load_model(
    ref: str | Path,
    load_in_4bit: bool = False,
    bf16: bool | None = None,
    key: str = "load_in_4bit",
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> PreTrainedModel:
    """A causal LM from a local directory or hub id, optionally quantized to 4-bit NF4.

    A local directory is loaded by its absolute path, so an adapter trained on the model records a
    base that loads from any working directory; a hub id stays as it is.

    Args:
        ref: a local model directory or a hub id.
        load_in_4bit: quantize the weights to 4-bit NF4 (QLoRA; needs CUDA and bitsandbytes).
        bf16: load the weights in bfloat16 (True) or float32 (False), as a training stage's config says;
            None (inference): :func:`default_dtype` of the device.
        key: the config setting that asked for 4-bit, named in the error where it cannot work.
        device: where to place the model (default: :func:`default_device`).
        dtype: the weights' dtype, overriding ``bf16``.

    Raises:
        PseudoCoTError: 4-bit asked for where it cannot work, the model cannot be found, or a file of
            its directory is damaged.
    """
    source = ref
    if Path(ref).is_dir():
        check_model_dir(Path(ref))
        source = os.path.abspath(ref)
    device = torch.device(device) if device is not None else default_device()
    if dtype is None:
        dtype = default_dtype(device) if bf16 is None else (torch.bfloat16 if bf16 else torch.float32)
    kwargs: dict = {"dtype": dtype, "device_map": {"": device}}
    if load_in_4bit:
        check_4bit(key)
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    try:
        return AutoModelForCausalLM.from_pretrained(source, trust_remote_code=False, **kwargs)
    except OSError:
        raise PseudoCoTError(f"could not load model '{ref}'; give a local directory or a reachable hub id.") from None


def load_tokenizer(ref: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a model directory or hub id.

    Raises:
        PseudoCoTError: the tokenizer cannot be found, or a file of its directory is damaged.
    """
    if Path(ref).is_dir():
        for name in TOKENIZER_FILES:
            if (Path(ref) / name).is_file():
                read_json(Path(ref) / name)
    try:
        return AutoTokenizer.from_pretrained(ref)
    except OSError:
        raise PseudoCoTError(
            f"could not load the tokenizer of '{ref}'; give a local directory or a reachable hub id."
        ) from None


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The padding id, falling back to eos for tokenizers without a pad token (Llama 3's).

    Padding is masked wherever it is used (attention mask 0, labels ``IGNORE_INDEX``), so the eos id
    there changes nothing the model computes or learns.
    """
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def check_same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase, a_name: str, b_name: str) -> None:
    """Raises a one-sentence error if two tokenizers would map text to different ids."""
    if a.get_vocab() != b.get_vocab():
        raise PseudoCoTError(
            f"the tokenizers of {a_name} ({len(a)} tokens) and {b_name} ({len(b)} tokens) differ; "
            "use models that share a tokenizer."
        )
