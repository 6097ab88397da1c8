"""The tiny world's model zoo: Llama-architecture models pretrained from scratch on the corpus.

Each model is a real ``LlamaForCausalLM`` with a tiny config, trained with the Hugging Face Trainer
on packed blocks of the world's corpus and saved with ``save_pretrained``, so every later stage
loads it with ``AutoModelForCausalLM.from_pretrained`` exactly as it would load a hub model.
Run with ``pseudocot zoo build CONFIG``; a killed build resumes from its last checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase, default_data_collator

from pseudocot.config import ZooConfig, ZooModelConfig
from pseudocot.errors import PseudoCoTError
from pseudocot.models import load_tokenizer
from pseudocot.stage import is_main_process
from pseudocot.train.loop import train, training_arguments


class PackedBlocks(Dataset):
    """Documents tokenized, concatenated and cut into blocks of ``block_size`` tokens."""

    def __init__(self, texts: list[str], tokenizer: PreTrainedTokenizerBase, block_size: int) -> None:
        ids = [i for t in texts for i in tokenizer(t, add_special_tokens=False)["input_ids"]]
        n = len(ids) // block_size
        if n == 0:
            raise PseudoCoTError(
                f"the corpus has {len(ids)} tokens, fewer than one block of {block_size}; "
                "raise world.corpus_documents or lower zoo.block_size."
            )
        self.blocks = torch.tensor(ids[: n * block_size]).view(n, block_size)  # (N, T)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}


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


def read_corpus(world_dir: Path) -> list[str]:
    """The world's pretraining documents."""
    with open(Path(world_dir) / "corpus.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


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
        seed=zoo.seed,
    )
    run = train(model, args, blocks, default_data_collator, f"pretrain {name}")
    if is_main_process():
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return {
        "parameters": model.num_parameters(),
        "stands_for": m.stands_for,
        "final_loss": round(run.final_loss, 4) if run.final_loss is not None else None,
        "train_loss": round(run.train_loss, 4),
        "train_seconds": round(run.seconds, 1),
        "tokens_per_second": round(run.steps_run * m.batch_size * zoo.block_size / run.seconds, 1),
        "resumed_from": run.resumed_from,
    }
