"""Batched text generation with named decoding presets (paper 4.3), through ``model.generate``.

Prompts are chat-rendered text (they carry their own special tokens). They are sorted by length,
left-padded in batches so every row's generation starts at the same position, and the outputs are
returned in the caller's order with per-row token counts, from which cost is computed.

A preset's settings that its decoding mode does not use (a temperature under greedy decoding, top-k
under beam search) are reported by :func:`generation_config` as ignored, never silently dropped.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.utils import ModelOutput

from pseudocot.config import GenerationPreset
from pseudocot.models import pad_id
from pseudocot.progress import track

SAMPLING_ONLY = ("temperature", "top_k", "top_p")


@dataclass
class Generation:
    """Generated texts in prompt order, with each row's prompt and generated token counts."""

    texts: list[str] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    generated_tokens: list[int] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)  # stopped by max_new_tokens, not by a stop token
    # The generated ids before the stop token (the stop token alone where nothing came before it).
    answer_ids: list[list[int]] = field(default_factory=list)
    # With ``readout``: per row, the last layer's hidden state at the prompt's end (H,) and what
    # ``readout`` made of the answer steps' raw log-probabilities, as the model computed them generating.
    readouts: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


# End-of-turn tokens of the chat formats in use: Llama 3's, ChatML's (SmolLM2, Qwen), Gemma's.
END_OF_TURN = ("<|eot_id|>", "<|end_of_text|>", "<|eom_id|>", "<|im_end|>", "<end_of_turn>")


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None = None) -> list[int]:
    """Token ids that end a turn: the tokenizer's eos, the model's own (its ``generation_config``'s eos
    list, where Gemma names ``<end_of_turn>`` beside ``<eos>``), and the :data:`END_OF_TURN` tokens the
    tokenizer has."""
    ids = {tokenizer.eos_token_id}
    own = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(own if isinstance(own, list) else [own])
    for token in END_OF_TURN:
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


def pad_rows(rows: Sequence[Sequence[int]], value: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ids padded with ``value`` to one width: the ids and the mask of the real ones, (B, W) each.

    Right-padded rows all start at the first position (scoring, training); left-padded rows all end
    at the last (generation, where every row's next token comes at the same position).
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[r, span] = torch.tensor(list(row), dtype=torch.long)
        mask[r, span] = 1
    return ids, mask


def cache_kwargs(model: PreTrainedModel, cache: Any) -> dict[str, Any]:
    """A key/value cache as this model's forward takes it: transformers renamed ``past_key_values`` to
    ``cache`` during 5.x, and a name it does not know would be taken silently into ``**kwargs``."""
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    return {name: cache}


def returned_cache(output: ModelOutput) -> Any:
    """The key/value cache a forward pass returned, under either name."""
    return getattr(output, "cache", None) or output.past_key_values


def forward_tail(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: int = 1, **kwargs
) -> tuple[ModelOutput, torch.Tensor]:
    """One forward pass over left-padded rows, with logits over the last ``keep`` positions only.

    At a real vocabulary the logits are the largest tensors of a pass (128k floats per position), and
    ``output_hidden_states`` would keep every layer's states for every token; where only each row's
    end is read, the head runs on the tail alone (``logits_to_keep``) and only the last layer's states
    are kept, read off the decoder's own output (after its final norm: what ``hidden_states[-1]`` is).

    Args:
        input_ids, attention_mask: (B, T) left-padded rows (:func:`pad_rows` with ``left=True``).
        keep: how many of the last positions get logits.
        kwargs: passed to the model (a cache, ``use_cache``); ``position_ids`` defaults to counting each
            row's real tokens only, so a left-padded row reads as it does alone.

    Returns:
        The model's output (``logits``: (B, keep, V); the cache where one was asked for) and the last
        layer's hidden states (B, T, H).
    """
    if "position_ids" not in kwargs:
        kwargs["position_ids"] = (attention_mask.cumsum(-1) - 1).clamp(min=0).to(model.device)
    states: list[torch.Tensor] = []
    hook = model.get_decoder().register_forward_hook(lambda _m, _a, out: states.append(out[0]))
    try:
        out = model(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            logits_to_keep=keep,
            **kwargs,
        )
    finally:
        hook.remove()
    return out, states[-1]


def generation_config(
    preset: GenerationPreset,
    tokenizer: PreTrainedTokenizerBase,
    max_new_tokens: int | None = None,
    model: PreTrainedModel | None = None,
) -> tuple[GenerationConfig, list[str]]:
    """The ``GenerationConfig`` of a preset, and the names of the preset's settings it ignores.

    Generation stops at :func:`stop_token_ids` of the tokenizer and of ``model`` where one is given.

    Greedy decoding and beam search ignore temperature, top-k and top-p; those settings are listed
    (when they differ from neutral values) so the caller can record them as ignored.
    """
    defaults = GenerationPreset()
    ignored = []
    kwargs: dict = {
        "max_new_tokens": max_new_tokens or preset.max_new_tokens,
        "num_beams": preset.num_beams,
        "do_sample": preset.do_sample,
        "eos_token_id": stop_token_ids(tokenizer, model),
        "pad_token_id": pad_id(tokenizer),
    }
    if preset.do_sample:
        kwargs.update(temperature=preset.temperature, top_k=preset.top_k or None, top_p=preset.top_p)
    else:
        ignored = [n for n in SAMPLING_ONLY if getattr(preset, n) != getattr(defaults, n)]
    if preset.num_beams > 1:
        kwargs["early_stopping"] = True
    return GenerationConfig(**kwargs), ignored


class Stopped(StoppingCriteria):
    """Ends the rows of the prompts ``stopped(i)`` is true for (``i`` in the caller's order), checked
    after every generated token: a request cancelled mid-generation costs at most one more step."""

    def __init__(self, stopped: Callable[[int], bool], prompts: Sequence[int]) -> None:
        self.stopped = stopped
        self.prompts = prompts  # the caller's index of each row of this batch

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor | None, **kwargs) -> torch.Tensor:
        rows = torch.tensor([self.stopped(i) for i in self.prompts], device=input_ids.device)
        return rows.repeat_interleave(input_ids.shape[0] // len(self.prompts))  # (B * beams,)


@torch.inference_mode()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    preset: GenerationPreset,
    batch_size: int = 32,
    max_new_tokens: int | None = None,
    description: str | None = None,
    readout: Callable[[torch.Tensor, list[int]], torch.Tensor] | None = None,
    stopped: Callable[[int], bool] | None = None,
) -> Generation:
    """Continues each prompt; returns the continuations (special tokens removed, stripped) in order.

    A row ends at its first stop token (:func:`stop_token_ids` of the tokenizer and the model: where
    plain ``model.generate`` stops, and at the end-of-turn tokens of the chat formats in use).

    With ``readout`` (sampling or greedy, not beam search), each row's hidden state at the prompt's
    end is kept from the generation itself, with ``readout(logp, answer_ids)`` of its answer steps'
    log-probabilities (A, V), so no second pass over the prompt is needed to read them. A batch's
    steps are dropped once read; the caller makes sure one batch's fit in memory.

    With ``stopped``, ``stopped(i)`` is checked after every token, and prompt ``i``'s generation ends
    there when it is true (its request was cancelled; its text is then whatever came before).
    """
    if readout and preset.num_beams > 1:
        raise ValueError("readout needs one beam: beam search reorders its rows' steps")
    config, _ = generation_config(preset, tokenizer, max_new_tokens, model)
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    n = len(prompts)
    out = Generation([""] * n, [0] * n, [0] * n, [False] * n, [[] for _ in range(n)], [None] * n if readout else [])
    stops = set(stop_token_ids(tokenizer, model))
    if readout:
        config.update(return_dict_in_generate=True, output_logits=True, output_hidden_states=True)
    for batch in track(batches, description) if description else batches:
        ids, mask = pad_rows([encoded[i] for i in batch], pad_id(tokenizer), left=True)
        width = ids.shape[1]
        result = model.generate(
            input_ids=ids.to(model.device),
            attention_mask=mask.to(model.device),
            generation_config=config,
            stopping_criteria=StoppingCriteriaList([Stopped(stopped, batch)]) if stopped else None,
        )
        generated = (result.sequences if readout else result)[:, width:].cpu()
        for row, i in enumerate(batch):
            tokens = generated[row].tolist()
            length = next((k + 1 for k, t in enumerate(tokens) if t in stops), len(tokens))
            out.texts[i] = tokenizer.decode(tokens[:length], skip_special_tokens=True).strip()
            out.prompt_tokens[i] = len(encoded[i])
            out.generated_tokens[i] = length
            out.truncated[i] = not any(t in stops for t in tokens[:length])
            answer = [t for t in tokens[:length] if t not in stops] or tokens[:1]
            out.answer_ids[i] = answer
            if readout:
                steps = torch.stack([result.logits[k][row] for k in range(len(answer))]).float()
                state = result.hidden_states[0][-1][row, -1].float().cpu()
                out.readouts[i] = (state, readout(steps.log_softmax(-1).cpu(), answer))
        del result  # the batch's logits, hidden states and cache, before the next batch's
    return out
