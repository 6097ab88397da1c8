"""Multiple-choice scoring by log-likelihood, as lm-evaluation-harness scores MMLU.

Each prompt is followed by each of its candidate continuations (``" A"``.. ``" D"``, or the options'
texts) and the model's log-probability of every continuation is returned; the argmax is the model's choice and the
softmax over candidates is its confidence over the options.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


def _right_padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


@torch.inference_mode()
def continuation_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    continuations: Sequence[Sequence[str]],
    batch_size: int = 32,
) -> torch.Tensor:
    """Log-probability of each prompt's candidate continuations.

    Prompts are tokenized as they are (no special tokens added: chat-rendered text carries its own).
    When every continuation is one token, one forward pass per prompt scores all its candidates;
    otherwise each (prompt, continuation) pair is scored as the sum of its continuation tokens'
    log-probabilities.

    Args:
        continuations: for each prompt, its candidates (e.g. ``[" A", " B", " C", " D"]``).

    Returns:
        Tensor of shape (len(prompts), most candidates of any prompt), float32; ``-inf`` where a
        prompt has fewer candidates.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    cache: dict[str, list[int]] = {}

    def encode(text: str) -> list[int]:
        if text not in cache:
            cache[text] = tokenizer(text, add_special_tokens=False)["input_ids"]
        return cache[text]

    prompt_ids = [encode(p) for p in prompts]
    cont_ids = [[encode(c) for c in cands] for cands in continuations]
    device = model.device
    out = torch.full((len(prompts), max(len(c) for c in continuations)), float("-inf"))
    if all(len(c) == 1 for cands in cont_ids for c in cands):
        for start in range(0, len(prompts), batch_size):
            rows = prompt_ids[start : start + batch_size]
            ids, mask = _right_padded(rows, pad_id)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (B, T, V)
            last = (mask.sum(1) - 1).to(device)  # (B,)
            logp = logits[torch.arange(len(rows), device=device), last].float().log_softmax(-1).cpu()  # (B, V)
            for k in range(len(rows)):
                targets = [c[0] for c in cont_ids[start + k]]
                out[start + k, : len(targets)] = logp[k, targets]
        return out
    pairs = [(i, j) for i, cands in enumerate(cont_ids) for j in range(len(cands))]
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        rows = [prompt_ids[i] + cont_ids[i][j] for i, j in chunk]
        ids, mask = _right_padded(rows, pad_id)
        logp = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().log_softmax(-1).cpu()
        for k, (i, j) in enumerate(chunk):
            n_prompt, cont = len(prompt_ids[i]), cont_ids[i][j]
            positions = torch.arange(n_prompt - 1, n_prompt - 1 + len(cont))
            out[i, j] = logp[k, positions, torch.tensor(cont)].sum()
    return out
