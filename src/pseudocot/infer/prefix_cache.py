"""Reusing the base's key/value cache across rounds of the loop.

Round after round, a question's conversation only grows: the text the base read last round, its
answer, a thought, and the header of its next answer. :class:`ConversationCache` keeps each
question's key/value tensors and token ids, and in the next round runs the model on the new tokens
only. Questions of a batch have caches of different lengths, so the cached tensors and the new tokens
are both left-padded to a common length (every row then ends at the last position), with an attention
mask that hides both kinds of padding and explicit position ids (each row continues at its own
length), in one forward pass. Only what is read is kept: the logits at the last position (at a 128k
vocabulary, all the new tokens' logits would be the largest tensor of the pass by far) and the last
layer's hidden state there.

A row whose new text does not extend its cached tokens (the first round, or a tokenizer that merges
across the boundary) is encoded from scratch in the same pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel

from pseudocot.infer.generate import cache_kwargs, forward_tail, pad_rows, returned_cache


@dataclass
class _Entry:
    ids: list[int]
    keys: list[torch.Tensor]  # per layer: (kv_heads, L, head_dim)
    values: list[torch.Tensor]


class ConversationCache:
    """Per-question key/value caches of one causal LM, extended a batch at a time."""

    def __init__(self, model: PreTrainedModel, pad_id: int) -> None:
        self.model = model
        self.pad_id = pad_id
        self.entries: dict[int, _Entry] = {}
        self.reused_tokens = 0  # tokens read from the cache instead of being encoded again

    def clear(self) -> None:
        self.entries.clear()

    @torch.inference_mode()
    def extend(self, keys: list[int], sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Runs the model to the end of each sequence, reusing each key's cached prefix.

        Args:
            keys: one identifier per row (a question's index).
            sequences: each row's whole token ids so far.

        Returns:
            The logits after each sequence's last token (B, V) in float32 (callers compare a few tokens'
            among themselves: a softmax over them, which the vocabulary's normalizer does not change),
            the last layer's hidden state there (B, H), and how many tokens each row ran through the model.
        """
        device = self.model.device
        pasts: list[_Entry | None] = []
        news: list[list[int]] = []
        for key, ids in zip(keys, sequences, strict=True):
            entry = self.entries.get(key)
            if entry is not None and len(entry.ids) < len(ids) and ids[: len(entry.ids)] == entry.ids:
                pasts.append(entry)
                news.append(ids[len(entry.ids) :])
            else:
                pasts.append(None)
                news.append(ids)
        past_lengths = torch.tensor([len(p.ids) if p else 0 for p in pasts])  # (B,)
        past_width, rows = int(past_lengths.max()), len(keys)
        input_ids, new_mask = pad_rows(news, self.pad_id, left=True)  # (B, W) each
        past_mask = (torch.arange(past_width) >= past_width - past_lengths[:, None]).long()  # (B, P)
        mask = torch.cat([past_mask, new_mask], dim=1)  # (B, P + W)
        positions = (past_lengths[:, None] + new_mask.cumsum(-1) - 1).clamp(min=0)  # (B, W); padding masked
        cache = DynamicCache(config=self.model.config)
        if past_width:
            layers = []
            for layer in range(len(next(p for p in pasts if p).keys)):
                k_ref = next(p for p in pasts if p).keys[layer]
                shape = (rows, k_ref.shape[0], past_width, k_ref.shape[2])
                k = torch.zeros(shape, dtype=k_ref.dtype, device=device)
                v = torch.zeros(shape, dtype=k_ref.dtype, device=device)
                for r, past in enumerate(pasts):
                    if past:
                        k[r, :, past_width - len(past.ids) :] = past.keys[layer]
                        v[r, :, past_width - len(past.ids) :] = past.values[layer]
                layers.append((k, v))
            cache = DynamicCache(ddp_cache_data=layers, config=self.model.config)
        out, states = forward_tail(
            self.model,
            input_ids,
            mask,
            position_ids=positions.to(device),
            use_cache=True,
            **cache_kwargs(self.model, cache),
        )
        returned = returned_cache(out)
        logits = out.logits[:, -1].float().cpu()  # (B, V)
        hidden = states[:, -1].float().cpu()  # (B, H)
        for r, key in enumerate(keys):
            keep = mask[r].bool()
            self.entries[key] = _Entry(
                list(sequences[r]),
                [layer.keys[r][:, keep.to(device)] for layer in returned.layers],
                [layer.values[r][:, keep.to(device)] for layer in returned.layers],
            )
        self.reused_tokens += int(past_lengths.sum())
        return logits, hidden, [len(n) for n in news]
