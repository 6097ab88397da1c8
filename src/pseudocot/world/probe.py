"""Probes the zoo: does a thought help? (``pseudocot zoo probe CONFIG``)

For each zoo model, subject and difficulty, two accuracies on the world's test split:

* **direct**: the base's prompt, the model answers at once;
* **gold**: the gold explanation is shown as a thought (the section-2 variant of the protocol).

The tiny world is useful only if hard items are near chance directly and near perfect with the
explanation, while easy items are answerable directly; this stage measures exactly that.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pseudocot.config import ProtocolConfig
from pseudocot.data.records import Record
from pseudocot.eval.choice import choose, grouped_accuracy
from pseudocot.models import load_model, load_tokenizer

CONDITIONS = ("direct", "gold")


def probe_model(
    model_dir: Path,
    records: Sequence[Record],
    protocol: ProtocolConfig,
    easy_max_steps: int,
    hard_min_steps: int,
    batch_size: int = 64,
) -> dict[str, float]:
    """Accuracy of one model, keyed ``condition/subject/steps``, ``condition/subject/all`` and
    ``condition/easy`` / ``condition/hard`` (both subjects pooled)."""
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir).eval()
    accuracy: dict[str, float] = {}
    for condition in CONDITIONS:
        thoughts = [r.reasoning or "" for r in records] if condition == "gold" else None
        picks, _ = choose(model, tokenizer, records, protocol, thoughts, batch_size)
        accuracy |= grouped_accuracy(records, picks, easy_max_steps, hard_min_steps, prefix=f"{condition}/")
    return dict(sorted(accuracy.items()))
