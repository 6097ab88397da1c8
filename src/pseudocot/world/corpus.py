"""The tiny world's pretraining corpora, one per role, so that each model knows only what its role allows.

* ``teacher``: the reasoning model's corpus. Its problems are written out step by step (the
  reasoning format of the reasoning set, and plain worked solutions), answered directly, and
  answered after a thought. It is the only corpus in which any model learns to *write* reasoning.
* ``base``: the corpus of the base's family and of the students (a general instruct model in the
  paper's setting). Problems are answered directly, and a thought may come before the answer or
  after a first answer; the loss is masked over every thought (and over a first answer given as a
  guess), so these models learn to *read* a thought in context, never to write one. Thoughts are
  imperfect on purpose: beside the gold explanation there are explanations with one wrong step
  (the chain goes on from the wrong value), explanations of a different question and bare claims
  of an option, while the answer is always the gold one. A model trained on it learns to weigh a
  thought against what it can see itself (an item with no steps, or whose last step sets the value,
  is read off the question whatever a thought says), not to copy a thought's last value.

Only the train split is used, so validation and test questions are never seen.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from pseudocot import prompts
from pseudocot.config import ProtocolConfig
from pseudocot.records import Record
from pseudocot.world.tasks import apply_op, read_off

# Formats of each role's corpus and their weights in its mix.
ROLES: dict[str, dict[str, float]] = {
    "teacher": {
        "chat_reasoning": 4.0,  # the reasoning set's format: question -> reasoning
        "plain_worked": 2.0,  # "Problem: ... Solution: <steps> Answer: 7"
        "chat_direct": 1.0,  # the direct answer in the chat format
        "chat_thought_first": 1.0,  # question, then a (gold) thought, then the answer
    },
    "base": {
        "plain_direct": 1.0,  # "Problem: ... Answer: 7"
        "chat_direct": 3.0,
        "chat_thought_first": 2.0,  # question, a thought (loss masked), the answer
        "chat_loop": 2.0,  # question, a first answer, a thought (both masked), the revised answer
    },
}

# Thoughts shown in the base corpus: the gold explanation, one with a wrong step, another question's,
# or a bare claim of an option with no reasoning (what a model never taught to reason writes when
# asked to: so that reading its own "reasoning" tells a base nothing it did not know).
THOUGHT_KINDS = {"gold": 0.55, "wrong_step": 0.2, "other_question": 0.15, "bare_claim": 0.1}


@dataclass(frozen=True)
class Document:
    """One corpus document and the character spans of it that carry no loss."""

    text: str
    masked: list[tuple[int, int]]


_STEP = re.compile(r"(\d) ([+*]) (\d) = (\d)\.|set to (\d)\.")
_CONCLUSION = re.compile(r"(\d)\.$")


def wrong_step(explanation: str, rng: random.Random) -> str:
    """``explanation`` with one step's result wrong and every later step computed from it, so that its
    conclusion is wrong.

    In both subjects a step reads the previous step's result (``Step 2: 1 * 7 = 7.``,
    ``z = b * 3 = 8 * 3 = 4.``), so the chain after the false step is consistent with it. A step that
    sets the value (``set to 4.``) reads nothing: a false one sets another digit, and the false step is
    drawn from the last such step on (one before it would not change the conclusion). An explanation
    without steps (a 0-step item) gets a wrong conclusion.
    """
    steps = list(_STEP.finditer(explanation))
    value = None
    if steps:
        last_set = max((i for i, m in enumerate(steps) if m[5] is not None), default=0)
        first = rng.randrange(last_set, len(steps))
        parts, cursor = [], 0
        for i, m in enumerate(steps):
            if m[5] is not None:  # a step that sets the value
                result = int(m[5]) if i != first else (int(m[5]) + rng.randrange(1, 10)) % 10
                text = f"set to {result}."
            else:
                x, op, y, result = int(m[1]), m[2], int(m[3]), int(m[4])
                if i > first:
                    x = value
                    result = apply_op(op, x, y)
                elif i == first:
                    result = (result + rng.randrange(1, 10)) % 10
                text = f"{x} {op} {y} = {result}."
            value = result
            parts += [explanation[cursor : m.start()], text]
            cursor = m.end()
        explanation = "".join(parts) + explanation[cursor:]
    conclusion = _CONCLUSION.search(explanation)
    if conclusion is None:
        return explanation
    if value is None:
        value = (int(conclusion[1]) + rng.randrange(1, 10)) % 10
    return explanation[: conclusion.start()] + f"{value}."


def _thought(
    record: Record, pool: Sequence[Record], rng: random.Random, imperfect: bool, style: prompts.AnswerStyle
) -> str:
    kind = rng.choices(list(THOUGHT_KINDS), list(THOUGHT_KINDS.values()))[0] if imperfect else "gold"
    if kind == "wrong_step":
        return wrong_step(record.reasoning or "", rng)
    if kind == "bare_claim":
        return prompts.format_answer(record, rng.randrange(len(record.choices)), style)
    if kind == "other_question":
        other = rng.choice(pool)
        return other.reasoning or "" if other.id != record.id else record.reasoning or ""
    return record.reasoning or ""


def _first_answer(record: Record, rng: random.Random, style: prompts.AnswerStyle) -> tuple[str, bool]:
    # A first answer before the thought: right on items read off the question, a guess on the others,
    # as a model answering directly would be. A guess is masked: it is context, not something to learn.
    guess = not read_off(record)
    choice = rng.randrange(len(record.choices)) if guess else None
    return prompts.format_answer(record, choice, style), guess


def _spans(text: str, parts: Sequence[str], start: int) -> list[tuple[int, int]]:
    spans, cursor = [], start
    for part in parts:
        at = text.index(part, cursor)
        spans.append((at, at + len(part)))
        cursor = at + len(part)
    return spans


def render_document(
    record: Record,
    fmt: str,
    tokenizer: PreTrainedTokenizerBase,
    protocol: ProtocolConfig,
    rng: random.Random,
    pool: Sequence[Record] = (),
) -> Document:
    """One corpus document: ``record`` written in format ``fmt`` (a format of :data:`ROLES`).

    Thoughts of the ``chat_thought_first`` and ``chat_loop`` formats are drawn from
    :data:`THOUGHT_KINDS` when ``pool`` (other questions, for mismatched thoughts) is given, and
    are gold otherwise.
    """
    style = protocol.answer_style
    one_shot = protocol.one_shot or rng.random() < 0.2
    answer = prompts.format_answer(record, style=style)
    masked: list[str] = []
    if fmt in ("plain_direct", "plain_worked"):
        text = prompts.plain_document(record, style, fmt == "plain_worked")
        return Document(tokenizer.bos_token + text + tokenizer.eos_token, [])
    if fmt == "chat_direct":
        messages = prompts.base_messages(record, one_shot=one_shot, style=style)
    elif fmt == "chat_thought_first":
        thought = _thought(record, pool, rng, bool(pool), style)
        messages = prompts.base_messages(record, thoughts=[thought], one_shot=protocol.one_shot, style=style)
        masked = [prompts.format_thought(thought)]
    elif fmt == "chat_loop":
        first, guess = _first_answer(record, rng, style)
        thought = _thought(record, pool, rng, bool(pool), style)
        messages = prompts.base_messages(record, [first], [thought], one_shot=protocol.one_shot, style=style)
        masked = ([first] if guess else []) + [prompts.format_thought(thought)]
    elif fmt == "chat_reasoning":
        messages, answer = prompts.reasoning_messages(record, one_shot, style), record.reasoning or ""
    else:
        formats = sorted({f for role in ROLES.values() for f in role})
        raise ValueError(f"unknown corpus format {fmt!r}; choose one of {', '.join(formats)}")
    text = prompts.render(tokenizer, messages, completion=answer)
    question_at = text.index(prompts.format_question(record, style))
    return Document(text, _spans(text, masked, question_at))


def build_corpus(
    records: Sequence[Record],
    tokenizer: PreTrainedTokenizerBase,
    protocol: ProtocolConfig,
    documents: int,
    seed: int,
    role: str,
) -> Iterator[Document]:
    """``documents`` documents of one role's corpus, drawn from ``records`` with its formats' weights."""
    if role not in ROLES:
        raise ValueError(f"unknown corpus role {role!r}; choose one of {', '.join(ROLES)}")
    rng = random.Random(f"{seed}/{role}")
    names, weights = list(ROLES[role]), list(ROLES[role].values())
    pool = records if role == "base" else ()
    for _ in range(documents):
        record = rng.choice(records)
        yield render_document(record, rng.choices(names, weights)[0], tokenizer, protocol, rng, pool)
