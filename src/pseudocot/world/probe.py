"""Probes the zoo: what can each model do before any fine-tuning? (``pseudocot zoo probe CONFIG``)

For each zoo model, subject and difficulty, four accuracies on the world's validation split:

* **direct**: the base's prompt, the model answers at once;
* **gold**: the gold explanation is shown as a thought (the section-2 variant of the protocol);
* **wrong_step**: the gold explanation with one wrong step (the chain carried on from it, or the
  set step of an item read off) as the thought: a model that weighs a thought keeps easy and read-off
  items right, one that copies follows it;
* **own_cot**: the model writes its own reasoning (the reasoning prompt, greedy) and then answers
  with it as the thought, as the ``cot`` rows of the evaluation do.

Beside easy and hard items (by length), two groups: ``hard_reasoning``, the hard items that need
their steps, and ``read_off_long``, items with steps whose last step sets the value (read off the
question whatever their length). The tiny world is faithful only if, for the base's family, hard
items that need reasoning are near chance directly and with its own chain of thought, near perfect
with the gold explanation, and easy and read-off items are answered directly whatever the thought
says; and if the teacher's own chain of thought is right on hard items. These are the world's
gates, read on validation before any role is used.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from pseudocot.config import GenerationPreset, ProtocolConfig
from pseudocot.eval.metrics import grouped_accuracy
from pseudocot.infer.answer_modes import answer_given
from pseudocot.infer.choice import is_right
from pseudocot.infer.thoughts import write_thoughts
from pseudocot.models import load_model, load_tokenizer
from pseudocot.records import Record
from pseudocot.world.corpus import wrong_step
from pseudocot.world.tasks import read_off

CONDITIONS = ("direct", "gold", "wrong_step", "own_cot")


def probe_model(
    model_dir: Path,
    records: Sequence[Record],
    protocol: ProtocolConfig,
    easy_max_steps: int,
    hard_min_steps: int,
    batch_size: int = 64,
    max_new_tokens: int = 96,
) -> dict[str, float]:
    """Accuracy of one model, keyed ``condition/subject/steps``, ``condition/subject/all`` and
    ``condition/easy`` / ``condition/hard`` (both subjects pooled)."""
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir).eval()
    rng = random.Random(0)
    preset = GenerationPreset(max_new_tokens=max_new_tokens)
    own = write_thoughts(model, tokenizer, records, protocol, preset, batch_size)
    thoughts: dict[str, list[str] | None] = {
        "direct": None,
        "gold": [r.reasoning or "" for r in records],
        "wrong_step": [wrong_step(r.reasoning or "", rng) for r in records],
        "own_cot": list(own.texts),
    }
    # Beside easy and hard (by length): the hard items that need reasoning, and the items with steps
    # that are read off the question all the same (their last step sets the value).
    groups = {
        "hard_reasoning": [(r.difficulty or 0) >= hard_min_steps and not read_off(r) for r in records],
        "read_off_long": [(r.difficulty or 0) > 0 and read_off(r) for r in records],
    }
    accuracy: dict[str, float] = {}
    for condition in CONDITIONS:
        picks = answer_given(model, tokenizer, records, protocol, thoughts[condition], batch_size).choices
        accuracy |= grouped_accuracy(records, picks, easy_max_steps, hard_min_steps, prefix=f"{condition}/")
        for group, members in groups.items():
            hits = [is_right(r, c) for r, c, m in zip(records, picks, members, strict=True) if m]
            if hits:
                accuracy[f"{condition}/{group}"] = sum(hits) / len(hits)
    return dict(sorted(accuracy.items()))
