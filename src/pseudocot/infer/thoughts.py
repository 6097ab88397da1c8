"""Thoughts: the reasoning a thought model (the TTM, or a teacher) writes for questions.

A thought model is prompted with :func:`pseudocot.prompts.reasoning_messages` (the format it was
trained on) and writes its reasoning as the assistant; that reasoning is the thought the base sees.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pseudocot import prompts
from pseudocot.config import GenerationPreset, ProtocolConfig
from pseudocot.infer.generate import Generation, generate
from pseudocot.records import Record


def thought_prompts(
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    protocol: ProtocolConfig,
) -> list[str]:
    """The thought model's prompt for each record."""
    return [
        prompts.render(tokenizer, prompts.reasoning_messages(r, protocol.one_shot, protocol.answer_style))
        for r in records
    ]


def write_thoughts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    protocol: ProtocolConfig,
    preset: GenerationPreset,
    batch_size: int = 32,
    description: str | None = None,
) -> Generation:
    """One thought per record, in order, with token counts."""
    texts = thought_prompts(tokenizer, records, protocol)
    return generate(model, tokenizer, texts, preset, batch_size, description=description)
