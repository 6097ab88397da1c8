"""The system answering a split: ``pseudocot answer CONFIG`` (the last stage of ``make demo``).

The pseudo-CoT system (base + TTM + router) answers every question of a split through the loop.
Per question it writes the final answer, every thought and intermediate answer, the router's
scores and the cost; the metrics are accuracy (easy, hard, all), the share of questions given a
thought, thoughts and FLOPs per question, next to the base's own first answer (never thinking),
which the same run produced.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pseudocot.data.records import Record
from pseudocot.infer.loop import PseudoCoT


def answer_split(
    system: PseudoCoT, records: Sequence[Record], easy_max_steps: int | None, hard_min_steps: int | None, out: Path
) -> dict[str, Any]:
    """Runs the system on ``records``, writes ``answers.jsonl`` into ``out``, returns the metrics."""
    results = system.run(records)
    groups: dict[str, list[tuple[bool, bool]]] = {"all": []}
    with open(out / "answers.jsonl", "w", encoding="utf-8") as f:
        for record, result in zip(records, results, strict=True):
            right = result.letter == record.answer
            direct = result.choices[0] is not None and result.choices[0] == record.answer_index
            f.write(json.dumps({**result.to_dict(), "gold": record.answer, "correct": right}) + "\n")
            steps = record.difficulty or 0
            groups["all"].append((right, direct))
            if easy_max_steps is not None and steps <= easy_max_steps:
                groups.setdefault("easy", []).append((right, direct))
            elif hard_min_steps is not None and steps >= hard_min_steps:
                groups.setdefault("hard", []).append((right, direct))
    n = len(results)
    metrics: dict[str, Any] = {"questions": n}
    for name, hits in groups.items():
        metrics[f"accuracy_{name}"] = sum(h[0] for h in hits) / len(hits)
        metrics[f"direct_accuracy_{name}"] = sum(h[1] for h in hits) / len(hits)
    metrics["call_rate"] = sum(bool(r.thoughts) for r in results) / n
    metrics["thoughts_per_question"] = sum(len(r.thoughts) for r in results) / n
    metrics["flops_per_question"] = sum(r.flops for r in results) / n
    metrics["tokens_per_question"] = {
        model: sum(r.usage[model].total for r in results) / n for model in ("base", "ttm")
    }
    return metrics
