"""The tiny world's model zoo: Llama-architecture models pretrained from scratch on the corpus.

Each model is a real ``LlamaForCausalLM`` with a tiny config, trained with the Hugging Face Trainer
on packed blocks of the world's corpus and saved with ``save_pretrained``, so every later stage
loads it with ``AutoModelForCausalLM.from_pretrained`` exactly as it would load a hub model.
Run with ``pseudocot zoo build CONFIG``; a killed build resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase, default_data_collator

from pseudocot.config import ZooConfig, ZooModelConfig
from pseudocot.errors import PseudoCoTError
from pseudocot.models import load_tokenizer
from pseudocot.stage import KEY_FIELDS, MANIFEST, file_hash, is_main_process, read_json, read_manifest
from pseudocot.train.trainer import train, training_arguments
from pseudocot.world.corpus import Document


def masked_ids(doc: Document, tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """Token ids of a document and its labels: the ids, with -100 on tokens inside a masked span."""
    enc = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    labels = [
        -100 if any(lo <= start < hi for lo, hi in doc.masked) else i
        for i, (start, _) in zip(ids, enc["offset_mapping"], strict=True)
    ]
    return ids, labels


class PackedBlocks(Dataset):
    """Documents tokenized, concatenated and cut into blocks of ``block_size`` tokens.

    Labels follow the documents' masks: no loss on a thought the model should only read.
    """

    def __init__(self, docs: list[Document], tokenizer: PreTrainedTokenizerBase, block_size: int) -> None:
        ids: list[int] = []
        labels: list[int] = []
        for doc in docs:
            doc_ids, doc_labels = masked_ids(doc, tokenizer)
            ids += doc_ids
            labels += doc_labels
        n = len(ids) // block_size
        if n == 0:
            raise PseudoCoTError(
                f"the corpus has {len(ids)} tokens, fewer than one block of {block_size}; "
                "raise world.corpus_documents or lower zoo.block_size."
            )
        self.blocks = torch.tensor(ids[: n * block_size]).view(n, block_size)  # (N, T)
        self.labels = torch.tensor(labels[: n * block_size]).view(n, block_size)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[i], "labels": self.labels[i]}


def llama_config(m: ZooModelConfig, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    """The ``LlamaConfig`` of one zoo model (tied embeddings, as Llama 3.2 1B and 3B have)."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=m.hidden_size,
        intermediate_size=m.intermediate_size,
        num_hidden_layers=m.num_hidden_layers,
        num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.num_key_value_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def read_corpus(world_dir: Path, role: str) -> list[Document]:
    """The documents of one role's pretraining corpus."""
    with open(Path(world_dir) / "corpus" / f"{role}.jsonl", encoding="utf-8") as f:
        return [Document(d["text"], [tuple(span) for span in d["masked"]]) for d in map(json.loads, f)]


def pretrain(
    name: str, m: ZooModelConfig, zoo: ZooConfig, world_dir: Path, out: Path, blocks: PackedBlocks
) -> dict[str, Any]:
    """Pretrains zoo model ``name`` from scratch and saves it (and the tokenizer) into ``out``.

    Checkpoints go to ``out/checkpoints`` and are resumed from if present (a killed run), then
    removed once the final weights are saved.
    """
    tokenizer = load_tokenizer(Path(world_dir) / "tokenizer")
    torch.manual_seed(zoo.seed)
    model = LlamaForCausalLM(llama_config(m, tokenizer))
    args = training_arguments(
        out / "checkpoints",
        max_steps=m.max_steps,
        per_device_train_batch_size=m.batch_size,
        learning_rate=m.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=min(zoo.warmup_steps, m.max_steps // 2),
        weight_decay=zoo.weight_decay,
        save_steps=zoo.save_steps,
        gradient_checkpointing=zoo.gradient_checkpointing,
        seed=zoo.seed,
    )
    run = train(model, args, blocks, default_data_collator, f"pretrain {name}")
    if is_main_process():
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    tokens = run.steps_run * m.batch_size * zoo.block_size
    return run.metrics() | {
        "parameters": model.num_parameters(),
        "stands_for": m.stands_for,
        "corpus": m.corpus,
        "tokens_per_parameter": round(m.max_steps * m.batch_size * zoo.block_size / model.num_parameters(), 2),
        "tokens_per_second": round(tokens / run.seconds, 1),
    }


# -- shipped checkpoints ---------------------------------------------------------------------------
#
# A zoo snapshot is what a hub snapshot is to a real model: checkpoints built once (here by
# ``pseudocot zoo build`` and ``pseudocot zoo snapshot``), shipped in the repository, and used as
# they are. Each model's folder holds its files and ``snapshot.json``: the stage key it was built
# for and the hash of every file (``stage.file_hash``). It serves a run only when that key is the
# run's own key (same zoo config, same corpus and tokenizer), and only after every file's hash checks.

SNAPSHOT_FILE = "snapshot.json"


def write_snapshot(model_dir: Path, out: Path) -> None:
    """Copies a built zoo model (its files and manifest) into ``out`` with its key and file hashes."""
    manifest = read_manifest(model_dir)
    if manifest is None:
        raise PseudoCoTError(f"{model_dir} is not a built zoo model; run `pseudocot zoo build CONFIG` first.")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files = sorted(p for p in Path(model_dir).iterdir() if p.is_file() and not p.name.startswith("."))
    for path in files:
        shutil.copy2(path, tmp / path.name)
    record = {
        "key": {k: manifest[k] for k in KEY_FIELDS if k in manifest},
        "sha256": {p.name: file_hash(p) for p in files if p.name != MANIFEST},
    }
    (tmp / SNAPSHOT_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def snapshot_matches(snapshot: Path, key: dict[str, Any]) -> bool:
    """Whether the snapshot of one model was built for ``key``, a zoo stage key (its config, and the
    content of its corpus and tokenizer)."""
    path = Path(snapshot) / SNAPSHOT_FILE
    return path.is_file() and read_json(path, ["key", "sha256"])["key"] == key


def copy_snapshot(snapshot: Path, out: Path) -> dict[str, Any]:
    """Copies a snapshot's model into ``out`` after checking every file's hash; returns its metrics.

    Raises:
        PseudoCoTError: a file is missing or its hash differs (the snapshot is damaged).
    """
    snapshot = Path(snapshot)
    record = read_json(snapshot / SNAPSHOT_FILE, ["key", "sha256"])
    for name, expected in record["sha256"].items():
        path = snapshot / name
        if not path.is_file() or file_hash(path) != expected:
            raise PseudoCoTError(
                f"{path} does not match the hash in {snapshot / SNAPSHOT_FILE}; restore it from git "
                "(`git checkout -- snapshots`) or rebuild the zoo with `pseudocot zoo build CONFIG zoo.snapshot=null`."
            )
        shutil.copy2(path, out / name)
    metrics = read_json(snapshot / MANIFEST, ["metrics"])["metrics"]
    return metrics | {"snapshot": str(snapshot)}
