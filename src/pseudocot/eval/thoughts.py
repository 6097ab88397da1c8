"""Thought quality: how accurate the base is given each thinker's thoughts, the way the paper cares about.

A thinker is a thought model (the TTM, the mid model, the teacher) writing its reasoning for each
question, or the gold explanations, or no thought at all; the base answers each question given it.
``benchmarks/thought_quality.py`` prints the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pseudocot.config import GenerationPreset, ProtocolConfig
from pseudocot.eval.metrics import grouped_share, last_digit
from pseudocot.infer.answer_modes import answer_given
from pseudocot.infer.choice import is_right
from pseudocot.infer.thoughts import write_thoughts
from pseudocot.models import check_same_tokenizer, load_model, load_tokenizer
from pseudocot.records import Record

GOLD = "gold"
NONE = "none"


def thought_quality(
    base_ref: str,
    thinkers: Mapping[str, str],
    records: Sequence[Record],
    protocol: ProtocolConfig,
    easy_max_steps: int,
    hard_min_steps: int,
    preset: GenerationPreset | None = None,
    batch_size: int = 32,
    can_conclude: Sequence[bool] | None = None,
) -> dict[str, dict[str, Any]]:
    """The base's accuracy given each thinker's thoughts (or ``gold`` explanations, or ``none``).

    Args:
        base_ref: the base model that answers.
        thinkers: display name -> model directory, or the special values ``gold`` and ``none``.
        can_conclude: per record, whether a reasoning can conclude its gold value (default: all); the
            concluded value counts these only (the tiny world's card items rest on a fact no reasoning finds).

    Returns:
        Per thinker: the base's accuracies (``easy``, ``hard``, ``all``, per subject and steps) and
        whether it got each item right (``right``); for a thought model also the mean thought length in
        tokens, its parameter count, three example thoughts, and how often its thought concludes the
        gold value by itself (``concluded``, grouped the same way; ``concludes`` per item).
    """
    preset = preset or GenerationPreset(max_new_tokens=96)
    tokenizer = load_tokenizer(base_ref)
    base = load_model(base_ref).eval()
    results: dict[str, dict[str, Any]] = {}
    for name, ref in thinkers.items():
        info: dict[str, Any] = {}
        if ref == GOLD:
            thoughts: list[str | None] = [r.reasoning or "" for r in records]
        elif ref == NONE:
            thoughts = [None] * len(records)
        else:
            check_same_tokenizer(load_tokenizer(ref), tokenizer, f"thinker {name}", "the base")
            model = load_model(ref).eval()
            written = write_thoughts(model, tokenizer, records, protocol, preset, batch_size, f"thoughts {name}")
            thoughts = list(written.texts)
            info["parameters"] = model.num_parameters()
            info["mean_thought_tokens"] = sum(written.generated_tokens) / max(1, len(records))
            info["examples"] = thoughts[:3]
            concludes = [last_digit(t) == last_digit(r.answer_text) for t, r in zip(thoughts, records, strict=True)]
            scored = [i for i in range(len(records)) if can_conclude is None or can_conclude[i]]
            info["concluded"] = grouped_share(
                [records[i] for i in scored], [concludes[i] for i in scored], easy_max_steps, hard_min_steps
            )
            info["concludes"] = concludes
        picks = answer_given(base, tokenizer, records, protocol, thoughts, batch_size * 2).choices
        info["right"] = [is_right(r, c) for r, c in zip(records, picks, strict=True)]
        info["accuracy"] = grouped_share(records, info["right"], easy_max_steps, hard_min_steps)
        results[name] = info
    return results
