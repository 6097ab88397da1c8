"""Evaluation metrics (paper 5): answer extraction, accuracy with its interval, BLEU, ROUGE-L, McNemar.

* :func:`extract_choice` reads which option a generated answer picks: a bare letter, ``(B)``, ``B.``,
  ``The answer is B``, ``The best answer is B``, or, with no letter, the one option whose text the
  answer states. Ambiguous or empty outputs give ``None`` (counted as wrong, and counted apart).
* BLEU and ROUGE-L F1 come from sacrebleu and rouge-score themselves.
* :func:`bootstrap_interval` is a percentile bootstrap of a mean; :func:`mcnemar` the exact McNemar
  test of two systems on the same items (a binomial test on the items where they disagree).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import sacrebleu
from rouge_score import rouge_scorer
from scipy.stats import binomtest

from pseudocot.data.records import LETTERS

# "answer is B", "Answer: (C)", "answer is **B**": an upper-case letter (so the article "a" is not
# read as option A), or a lower-case one only in parentheses or ending the text.
_STATED = re.compile(
    r"\b(?:[Bb]est |[Cc]orrect |[Ff]inal )?[Aa]nswer\s*(?:is|:)\s*:?\s*\**\s*"
    r"(?:\(([A-Ja-j])\)|([A-J])(?![A-Za-z0-9])|([a-j])\W*$)"
)
_BARE = re.compile(r"^\(?([A-J])\)?[.:)]?$")
_LEADING = re.compile(r"^\(?([A-J])[).:]\s")
_TRAILING = re.compile(r"(?:\bis|:)\s+\**\(?([A-J])\)?\**\.?$")  # "... I think it is C"
_ANSWER_TEXT = re.compile(r"\banswer\s*(?:is|:)\s*(.+)$", re.IGNORECASE | re.DOTALL)


def extract_choice(text: str, choices: Sequence[str]) -> int | None:
    """The option (index) a model's output picks, or ``None`` when it picks none or several."""
    text = (text or "").strip()
    if not text:
        return None
    letters = LETTERS[: len(choices)]

    def index(letter: str) -> int | None:
        letter = letter.upper()
        return letters.index(letter) if letter in letters else None

    stated = [index(next(g for g in m.groups() if g)) for m in _STATED.finditer(text)]
    stated = [i for i in stated if i is not None]  # a letter past the options is not an answer
    if stated:
        return stated[-1]
    for pattern in (_BARE, _LEADING, _TRAILING):
        match = pattern.search(text) if pattern is _TRAILING else pattern.match(text)
        if match and index(match.group(1)) is not None:
            return index(match.group(1))
    # No letter: the one option whose text the answer states (after "answer is" when present).
    tail = _ANSWER_TEXT.search(text)
    region = (tail.group(1) if tail else text).strip().rstrip(".").strip()
    exact = [i for i, c in enumerate(choices) if region.lower() == c.strip().lower()]
    if len(exact) == 1:
        return exact[0]
    mentioned = [
        i
        for i, c in enumerate(choices)
        if c.strip() and re.search(rf"(?<!\w){re.escape(c.strip())}(?!\w)", region, re.I)
    ]
    return mentioned[0] if len(mentioned) == 1 else None


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_CONCLUDES = re.compile(r"\b(?:answer|result|therefore|thus|hence|so|final)\b", re.IGNORECASE)


def concluding_sentence(text: str) -> str:
    """The sentence a reasoning text concludes with: the last one that says so ("So the result is 8.",
    "Therefore, the answer is B."), else its last sentence."""
    sentences = [s.strip() for s in _SENTENCE_END.split((text or "").strip()) if s.strip()]
    if not sentences:
        return ""
    return next((s for s in reversed(sentences) if _CONCLUDES.search(s)), sentences[-1])


def reached_choice(text: str, choices: Sequence[str]) -> int | None:
    """The option a reasoning trace reaches: read off its concluding sentence only, so that a value an
    earlier step mentions is not taken for the trace's answer."""
    return extract_choice(concluding_sentence(text), choices)


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
