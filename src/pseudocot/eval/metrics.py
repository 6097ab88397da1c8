"""Evaluation metrics (paper 5): accuracy by group and with its interval, BLEU, ROUGE-L, McNemar.

* :func:`grouped_accuracy` is accuracy per subject and steps, easy and hard, and over all.
* BLEU and ROUGE-L F1 come from sacrebleu and rouge-score themselves.
* :func:`bootstrap_interval` is a percentile bootstrap of a mean; :func:`mcnemar` the exact McNemar
  test of two systems on the same items (a binomial test on the items where they disagree).
* :func:`last_digit` reads the value a piece of reasoning concludes (the tiny world's explanations end
  with it), so that a thought model answering alone can be scored.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import sacrebleu
from rouge_score import rouge_scorer
from scipy.stats import binomtest

from pseudocot.infer.choice import is_right
from pseudocot.records import Record


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu's defaults), 0-100."""
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 (rouge-score, with stemming), 0-1."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, hyp)["rougeL"].fmeasure for hyp, ref in zip(hypotheses, references, strict=True)]
    return float(np.mean(scores)) if scores else 0.0


def bootstrap_interval(
    values: Sequence[float], samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (e.g. per-item hits)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(samples, data.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def last_digit(text: str) -> str | None:
    """The last digit written in ``text`` (None when there is none)."""
    digits = [c for c in text if c.isdigit()]
    return digits[-1] if digits else None


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> dict[str, float]:
    """Exact McNemar test of two systems' per-item hits on the same items.

    Returns the counts of items only ``a`` got right (``a_only``) and only ``b`` got right
    (``b_only``), and the two-sided p-value of a binomial test of ``a_only`` among the discordant items.
    """
    if len(a) != len(b):
        raise ValueError(f"the systems were scored on different numbers of items ({len(a)} and {len(b)})")
    a_only = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    b_only = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    n = a_only + b_only
    p = 1.0 if n == 0 else float(binomtest(a_only, n, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "p_value": p}


def grouped_accuracy(
    records: Sequence[Record], choices: Sequence[int | None], easy_max_steps: int, hard_min_steps: int, prefix: str = ""
) -> dict[str, float]:
    """Accuracy keyed ``{prefix}subject/steps``, ``{prefix}subject/all``, ``{prefix}easy``,
    ``{prefix}hard`` (subjects pooled, by reasoning steps) and ``{prefix}all``."""
    hits = [is_right(record, choice) for record, choice in zip(records, choices, strict=True)]
    return grouped_share(records, hits, easy_max_steps, hard_min_steps, prefix)


def grouped_share(
    records: Sequence[Record], hits: Sequence[bool], easy_max_steps: int, hard_min_steps: int, prefix: str = ""
) -> dict[str, float]:
    """The share of ``hits`` per group, keyed as :func:`grouped_accuracy`'s."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for record, hit in zip(records, hits, strict=True):
        groups[f"{prefix}{record.subject}/{record.difficulty}"].append(hit)
        groups[f"{prefix}{record.subject}/all"].append(hit)
        groups[f"{prefix}all"].append(hit)
        group = difficulty_group(record, easy_max_steps, hard_min_steps)
        if group:
            groups[f"{prefix}{group}"].append(hit)
    return {key: sum(v) / len(v) for key, v in sorted(groups.items())}


def difficulty_group(record: Record, easy_max_steps: int | None, hard_min_steps: int | None) -> str | None:
    """``easy`` (at most ``easy_max_steps`` reasoning steps), ``hard`` (at least ``hard_min_steps``), or
    ``None`` (in between, or no bound given)."""
    steps = record.difficulty or 0
    if easy_max_steps is not None and steps <= easy_max_steps:
        return "easy"
    if hard_min_steps is not None and steps >= hard_min_steps:
        return "hard"
    return None
