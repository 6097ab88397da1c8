"""Supervised examples: prompt-completion pairs tokenized with the loss on the completion only.

The data stage writes ``{"prompt", "completion"}`` rows rendered with the chat template; here the two
parts are tokenized separately and concatenated, and the prompt's labels are ``IGNORE_INDEX`` so the
loss covers only what the assistant writes (its answer, or its reasoning), closing ``<|eot_id|>``
included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from pseudocot.errors import PseudoCoTError
from pseudocot.infer.generate import pad_rows
from pseudocot.train.losses import IGNORE_INDEX


def encode_example(
    tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str, max_length: int
) -> dict[str, list[int]]:
    """Token ids and labels of one example, cut to ``max_length`` from the left of the prompt.

    The completion is kept whole where it fits: truncating the prompt's start loses context, while
    truncating the completion would teach the model to stop mid-answer.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"][:max_length]
    prompt_ids = prompt_ids[max(0, len(prompt_ids) + len(completion_ids) - max_length) :]
    return {
        "input_ids": prompt_ids + completion_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + completion_ids,
    }


class PromptCompletionDataset(Dataset):
    """A JSONL file of prompt-completion rows, tokenized once."""

    def __init__(self, path: Path, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        if not Path(path).is_file():
            raise PseudoCoTError(f"training file {path} does not exist; run the data stage first.")
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        if not rows:
            raise PseudoCoTError(f"training file {path} has no examples; check the data sources.")
        self.examples = [encode_example(tokenizer, r["prompt"], r["completion"], max_length) for r in rows]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.examples[i]


def pad_collate(pad_id: int) -> Any:
    """A collator that right-pads ``input_ids`` with ``pad_id`` and ``labels`` with ``IGNORE_INDEX``.

    ``pad_id`` is :func:`pseudocot.models.pad_id` of the tokenizer (its eos where it has no pad token,
    as Llama 3's): padded positions get attention mask 0 and no loss, so the id there is never learned.
    """

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        ids, mask = pad_rows([b["input_ids"] for b in batch], pad_id)
        labels, _ = pad_rows([b["labels"] for b in batch], IGNORE_INDEX)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return collate
