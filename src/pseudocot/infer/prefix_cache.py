"""Reusing the base's key/value cache across rounds of the loop.

Round after round, a question's conversation only grows: the text the base read last round, its
answer, a thought, and the header of its next answer. :class:`ConversationCache` keeps each
question's key/value tensors and token ids, and in the next round runs the model on the new tokens
only. Questions of a batch have caches of different lengths, so the cached tensors are left-padded
to a common length and the new tokens right-padded, with an attention mask that hides both kinds of
padding and explicit position ids (each row continues at its own length), in one forward pass.

A row whose new text does not extend its cached tokens (the first round, or a tokenizer that merges
across the boundary) is encoded from scratch in the same pass.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel


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
        # transformers renamed ``past_key_values`` to ``cache`` during 5.x; use whichever this one has.
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def clear(self) -> None:
        self.entries.clear()

    @torch.inference_mode()
    def extend(self, keys: list[int], sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Runs the model to the end of each sequence, reusing each key's cached prefix.

        Args:
            keys: one identifier per row (a question's index).
            sequences: each row's whole token ids so far.

        Returns:
            The log-probabilities after each sequence's last token (B, V), the last layer's hidden
            state there (B, H), and how many tokens each row ran through the model.
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
        past_lengths = [len(p.ids) if p else 0 for p in pasts]
        past_width, new_width = max(past_lengths), max(len(n) for n in news)
        rows = len(keys)
        input_ids = torch.full((rows, new_width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((rows, past_width + new_width), dtype=torch.long)
        positions = torch.zeros((rows, new_width), dtype=torch.long)
        for r, (new, past) in enumerate(zip(news, past_lengths, strict=True)):
            input_ids[r, : len(new)] = torch.tensor(new)
            mask[r, past_width - past : past_width] = 1
            mask[r, past_width : past_width + len(new)] = 1
            positions[r] = torch.arange(past, past + new_width)
        cache = None
        if past_width:
            layers = []
            for layer in range(len(next(p for p in pasts if p).keys)):
                k_ref = next(p for p in pasts if p).keys[layer]
                shape = (rows, k_ref.shape[0], past_width, k_ref.shape[2])
                k = torch.zeros(shape, dtype=k_ref.dtype, device=device)
                v = torch.zeros(shape, dtype=k_ref.dtype, device=device)
                for r, past in enumerate(pasts):
                    if past:
                        k[r, :, past_width - past_lengths[r] :] = past.keys[layer]
                        v[r, :, past_width - past_lengths[r] :] = past.values[layer]
                layers.append((k, v))
            cache = DynamicCache(ddp_cache_data=layers, config=self.model.config)
        out = self.model(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            use_cache=True,
            output_hidden_states=True,
            **{self._cache_arg: cache if cache is not None else DynamicCache(config=self.model.config)},
        )
        returned = getattr(out, "cache", None) or out.past_key_values
        last = torch.tensor([len(n) - 1 for n in news], device=device)
        index = torch.arange(rows, device=device)
        logprobs = out.logits[index, last].float().log_softmax(-1).cpu()  # (B, V)
        hidden = out.hidden_states[-1][index, last].float().cpu()  # (B, H)
        for r, key in enumerate(keys):
            keep = mask[r].bool()
            self.entries[key] = _Entry(
                list(sequences[r]),
                [layer.keys[r][:, keep.to(device)] for layer in returned.layers],
                [layer.values[r][:, keep.to(device)] for layer in returned.layers],
            )
        self.reused_tokens += sum(past_lengths)
        return logprobs, hidden, [len(n) for n in news]
