"""The tiny world's general pretraining corpus: its problems in varied formats.

The zoo is pretrained on this text so that its models are general "foundation" models of their
world, not task models: they have seen problems answered directly, worked solutions, reasoning
written out, conversations in the chat format, and conversations where a thought arrives after an
answer and the answer is revised. Only the train split is used, so validation and test questions
are never seen.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from transformers import PreTrainedTokenizerBase

from pseudocot import prompts
from pseudocot.config import ProtocolConfig
from pseudocot.data.records import Record

# Formats and their default weights in the mix.
FORMATS = {
    "plain_direct": 1.0,  # "Problem: ... Answer: B"
    "plain_worked": 1.0,  # "Problem: ... Solution: <steps> Answer: B"
    "chat_direct": 3.0,  # the base's direct answer in the chat format
    "chat_thought_first": 2.0,  # question, then a thought, then the answer
    "chat_loop": 2.0,  # question, an answer, a thought, the revised answer
    "chat_reasoning": 2.0,  # the reasoning set's format: question -> reasoning
}


def _first_answer(record: Record, rng: random.Random, style: prompts.AnswerStyle) -> str:
    # A first answer before the thought: right on easy items, a guess on harder ones, as a model
    # answering directly would be.
    choice = None if (record.difficulty or 0) <= 1 else rng.randrange(len(record.choices))
    return prompts.format_answer(record, choice, style)


def render_document(
    record: Record, fmt: str, tokenizer: PreTrainedTokenizerBase, protocol: ProtocolConfig, rng: random.Random
) -> str:
    """One corpus document: ``record`` written in format ``fmt`` (a key of :data:`FORMATS`)."""
    style = protocol.answer_style
    one_shot = protocol.one_shot or rng.random() < 0.2
    answer = prompts.format_answer(record, style=style)
    thought = [record.reasoning or ""]
    if fmt in ("plain_direct", "plain_worked"):
        return tokenizer.bos_token + prompts.plain_document(record, style, fmt == "plain_worked") + tokenizer.eos_token
    if fmt == "chat_direct":
        messages = prompts.base_messages(record, one_shot=one_shot, style=style)
    elif fmt == "chat_thought_first":
        messages = prompts.base_messages(record, thoughts=thought, one_shot=protocol.one_shot, style=style)
    elif fmt == "chat_loop":
        first = [_first_answer(record, rng, style)]
        messages = prompts.base_messages(record, first, thought, one_shot=protocol.one_shot, style=style)
    elif fmt == "chat_reasoning":
        messages, answer = prompts.reasoning_messages(record, one_shot, style), record.reasoning or ""
    else:
        raise ValueError(f"unknown corpus format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return prompts.render(tokenizer, messages, completion=answer)


def build_corpus(
    records: Sequence[Record], tokenizer: PreTrainedTokenizerBase, protocol: ProtocolConfig, documents: int, seed: int
) -> Iterator[str]:
    """``documents`` documents drawn from ``records`` with formats mixed by :data:`FORMATS` weights."""
    rng = random.Random(seed)
    names, weights = list(FORMATS), list(FORMATS.values())
    for _ in range(documents):
        record = rng.choice(records)
        yield render_document(record, rng.choices(names, weights)[0], tokenizer, protocol, rng)
