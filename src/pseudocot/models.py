"""Loading models the way a hub model is loaded, whatever their size.

Every model, a tiny-world zoo checkpoint or Llama 3.1 8B, goes through
``AutoModelForCausalLM.from_pretrained``. 4-bit loading (QLoRA) uses bitsandbytes and needs CUDA;
asking for it elsewhere is a clear error, never a silent fallback. Remote code is never run.
"""

from __future__ import annotations

import importlib.util

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from pseudocot.errors import PseudoCoTError


def check_4bit(key: str) -> None:
    """Raises a one-sentence error unless 4-bit loading can work here (``key`` names the setting)."""
    if not torch.cuda.is_available():
        raise PseudoCoTError(f"{key}=true needs a CUDA GPU (bitsandbytes 4-bit); set {key}=false on this machine.")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise PseudoCoTError(
            f"{key}=true needs the bitsandbytes package; pip install bitsandbytes, or set {key}=false."
        )


def load_model(ref: str, load_in_4bit: bool = False, bf16: bool = False, key: str = "load_in_4bit") -> PreTrainedModel:
    """A causal LM from a local directory or hub id, optionally quantized to 4-bit NF4.

    Raises:
        PseudoCoTError: 4-bit asked for where it cannot work, or the model cannot be found.
    """
    kwargs: dict = {"dtype": torch.bfloat16 if bf16 else torch.float32}
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
        return AutoModelForCausalLM.from_pretrained(ref, trust_remote_code=False, **kwargs)
    except OSError:
        raise PseudoCoTError(f"could not load model {ref!r}; give a local directory or a reachable hub id.") from None


def load_tokenizer(ref: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a model directory or hub id."""
    try:
        return AutoTokenizer.from_pretrained(ref)
    except OSError:
        raise PseudoCoTError(
            f"could not load the tokenizer of {ref!r}; give a local directory or a reachable hub id."
        ) from None


def check_same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase, a_name: str, b_name: str) -> None:
    """Raises a one-sentence error if two tokenizers would map text to different ids."""
    if a.get_vocab() != b.get_vocab():
        raise PseudoCoTError(
            f"the tokenizers of {a_name} ({len(a)} tokens) and {b_name} ({len(b)} tokens) differ; "
            "use models that share a tokenizer."
        )
