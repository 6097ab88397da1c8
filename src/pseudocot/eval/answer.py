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

from pseudocot.eval.metrics import difficulty_group
from pseudocot.infer.choice import is_right
from pseudocot.infer.system import PseudoCoT
from pseudocot.records import Record


def answer_split(
    system: PseudoCoT, records: Sequence[Record], easy_max_steps: int | None, hard_min_steps: int | None, out: Path
) -> dict[str, Any]:
    """Runs the system on ``records``, writes ``answers.jsonl`` into ``out``, returns the metrics."""
    results = system.run(records)
    groups: dict[str, list[tuple[bool, bool]]] = {"all": []}
    with open(out / "answers.jsonl", "w", encoding="utf-8") as f:
        for record, result in zip(records, results, strict=True):
            right, direct = is_right(record, result.choice), is_right(record, result.choices[0])
            f.write(json.dumps({**result.to_dict(), "gold": record.answer, "correct": right}) + "\n")
            groups["all"].append((right, direct))
            group = difficulty_group(record, easy_max_steps, hard_min_steps)
            if group:
                groups.setdefault(group, []).append((right, direct))
    n = len(results)
    metrics: dict[str, Any] = {"questions": n}
    for name, hits in groups.items():
        metrics[f"accuracy_{name}"] = sum(h[0] for h in hits) / len(hits)
        metrics[f"direct_accuracy_{name}"] = sum(h[1] for h in hits) / len(hits)
    metrics["call_rate"] = sum(bool(r.thoughts) for r in results) / n
    metrics["thoughts_per_question"] = sum(len(r.thoughts) for r in results) / n
    metrics["thoughts_cut"] = sum(r.thoughts_cut for r in results)  # stopped at the TTM's max_new_tokens
    metrics["flops_per_question"] = sum(r.flops for r in results) / n
    metrics["tokens_per_question"] = {
        model: sum(r.usage[model].total for r in results) / n for model in ("base", "ttm")
    }
    return metrics
