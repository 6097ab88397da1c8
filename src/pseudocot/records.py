"""The record schema every dataset in pseudocot is converted to, and JSONL reading and writing.

A record is one question with, where the source has them, its answer options, the gold answer and a
reasoning text (the paper's "intermediate reasoning", section 4.1). Multiple-choice answers are kept
as a letter (``"A"``..); free-text answers (document Q&A) as their text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

LETTERS = "ABCDEFGHIJ"


class Record(BaseModel):
    """One question of a dataset, in the form every stage reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, description="Identifier, unique within its source.")
    source: str = Field(min_length=1, description="Name of the dataset the record came from.")
    subject: str = Field(default="", description="Subject, e.g. 'college_mathematics'.")
    question: str = Field(min_length=1, description="The question text, without the options.")
    choices: list[str] = Field(default_factory=list, description="Answer options; empty if free-text.")
    answer: str = Field(min_length=1, description="Gold option letter, or the free-text answer.")
    reasoning: str | None = Field(default=None, description="Gold step-by-step explanation, if any.")
    difficulty: int | None = Field(default=None, description="Number of reasoning steps, if known.")

    @model_validator(mode="after")
    def _answer_is_an_option(self) -> Record:
        if self.choices:
            if len(self.choices) > len(LETTERS):
                raise ValueError(f"at most {len(LETTERS)} choices are supported, got {len(self.choices)}")
            if self.answer not in LETTERS[: len(self.choices)]:
                raise ValueError(
                    f"answer {self.answer!r} is not one of the option letters {', '.join(LETTERS[: len(self.choices)])}"
                )
        return self

    @property
    def answer_index(self) -> int:
        """Index of the gold option (multiple choice only)."""
        return LETTERS.index(self.answer)

    @property
    def answer_text(self) -> str:
        """The gold answer as text: the option's text for multiple choice, else the answer."""
        return self.choices[self.answer_index] if self.choices else self.answer


def asked(id: str, source: str, question: str, choices: Sequence[str] = ()) -> Record:
    """A question a user asks, whose gold answer nobody knows: the schema wants one, so the first option (or
    ``?`` for a free-text question) stands in."""
    return Record(id=id, source=source, question=question, choices=list(choices), answer="A" if choices else "?")


def write_jsonl(records: Iterable[Record], path: Path) -> int:
    """Writes records one JSON object a line; returns how many were written."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(record.model_dump_json(exclude_none=True) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> Iterator[Record]:
    """Reads records written by :func:`write_jsonl` (trusted input: errors are not skipped)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield Record.model_validate(json.loads(line))
