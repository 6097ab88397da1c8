"""Probes the zoo: does a thought help? (``pseudocot zoo probe CONFIG``)

For each zoo model, subject and difficulty, two accuracies on the world's test split:

* **direct**: the base's prompt, the model answers at once;
* **gold**: the gold explanation is shown as a thought (the section-2 variant of the protocol).

The tiny world is useful only if hard items are near chance directly and near perfect with the
explanation, while easy items are answerable directly; this stage measures exactly that.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from pseudocot import prompts
from pseudocot.config import ProtocolConfig
from pseudocot.data.records import LETTERS, Record
from pseudocot.eval.choice import continuation_logprobs

CONDITIONS = ("direct", "gold")


def choose(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    protocol: ProtocolConfig,
    thoughts: Sequence[str] | None = None,
    batch_size: int = 64,
) -> list[str]:
    """The option letter the model picks for each record, given an optional thought for each."""
    texts = []
    for i, record in enumerate(records):
        thought = [thoughts[i]] if thoughts else ()
        messages = prompts.base_messages(
            record, thoughts=thought, one_shot=protocol.one_shot, style=protocol.answer_style
        )
        texts.append(prompts.answer_prompt(tokenizer, messages))
    options = [prompts.answer_options(r, protocol.answer_style) for r in records]
    logp = continuation_logprobs(model, tokenizer, texts, options, batch_size)  # (N, C)
    return [LETTERS[i] for i in logp.argmax(-1).tolist()]


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
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    hits: dict[str, list[bool]] = defaultdict(list)
    for condition in CONDITIONS:
        thoughts = [r.reasoning or "" for r in records] if condition == "gold" else None
        picks = choose(model, tokenizer, records, protocol, thoughts, batch_size)
        for record, pick in zip(records, picks, strict=True):
            hit = pick == record.answer
            hits[f"{condition}/{record.subject}/{record.difficulty}"].append(hit)
            hits[f"{condition}/{record.subject}/all"].append(hit)
            steps = record.difficulty or 0
            if steps <= easy_max_steps or steps >= hard_min_steps:
                hits[f"{condition}/{'easy' if steps <= easy_max_steps else 'hard'}"].append(hit)
    return {key: sum(v) / len(v) for key, v in sorted(hits.items())}
