"""Builds the tiny world: item splits, the tokenizer and the pretraining corpus (``pseudocot world build``).

Output directory layout::

    train.jsonl validation.jsonl test.jsonl   items of both subjects, in the record schema
    tokenizer/                                a Llama-3-style PreTrainedTokenizerFast
    corpus/<role>.jsonl                       {"text", "masked"} pretraining documents of each role's
                                              corpus (train items only; see pseudocot.world.corpus)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pseudocot import prompts
from pseudocot.config import ProtocolConfig, WorldConfig
from pseudocot.progress import track
from pseudocot.records import Record, read_jsonl, write_jsonl
from pseudocot.world.corpus import ROLES, build_corpus
from pseudocot.world.tasks import SPLITS, generate_split, unknowable
from pseudocot.world.tokenizer import train_tokenizer

# Bumped whenever the generators change what they write (items, explanations, corpora), so that a
# world built by older code is not taken as up to date.
WORLD_FORMAT = 6

# Prompt strings appear in every chat document; giving them weight in BPE training gives them
# whole-word tokens, as a large corpus would.
_PROMPT_WEIGHT = 200


def world_split(world_dir: Path, split: str) -> list[Record]:
    """The records of one split of a built world."""
    return list(read_jsonl(Path(world_dir) / f"{split}.jsonl"))


def build_world(cfg: WorldConfig, protocol: ProtocolConfig, out: Path) -> dict[str, Any]:
    """Writes the world's splits, tokenizer and corpus into ``out``; returns counts as metrics."""
    per_split = {"train": cfg.train_per_level, "validation": cfg.validation_per_level, "test": cfg.test_per_level}
    unknown = {"unknown_levels": tuple(cfg.unknown_levels), "unknown_share": cfg.unknown_share}
    splits = {s: list(generate_split(s, per_split[s], cfg.levels, cfg.seed, **unknown)) for s in SPLITS}
    # A card's digit is a fact, not something a reasoning finds: train items that rest on one carry no
    # explanation, so the reasoning set (the teacher's fine-tune, the distillation) holds only items a
    # reasoning can solve, and the base's task set their answers. Validation and test keep it as the reference.
    splits["train"] = [r.model_copy(update={"reasoning": None}) if unknowable(r) else r for r in splits["train"]]
    for split, records in splits.items():
        write_jsonl(records, out / f"{split}.jsonl")
    # No model is pretrained on a card's digit, nor is the tokenizer fitted to those items: the zoo
    # knows no card, and a world with them keeps the zoo (and its snapshot) of the world without.
    known = [r for r in splits["train"] if not unknowable(r)]

    prompt_texts = [
        prompts.BASE_SYSTEM,
        prompts.REASONING_SYSTEM,
        f"{prompts.ANSWER_PREFIX} A. {prompts.THOUGHT_PREFIX} B. C. D.",
        "Problem: Solution: Answer: system user assistant",
    ]
    texts = [prompts.format_question(r, protocol.answer_style) + "\n" + (r.reasoning or "") for r in known]
    tokenizer = train_tokenizer(texts + _PROMPT_WEIGHT * prompt_texts, cfg.vocab_size)
    tokenizer.save_pretrained(out / "tokenizer")

    (out / "corpus").mkdir()
    for role in ROLES:
        with open(out / "corpus" / f"{role}.jsonl", "w", encoding="utf-8") as f:
            docs = build_corpus(known, tokenizer, protocol, cfg.corpus_documents, cfg.seed, role)
            for doc in track(docs, f"{role} corpus", total=cfg.corpus_documents):
                f.write(json.dumps({"text": doc.text, "masked": doc.masked}) + "\n")
    return {f"{s}_items": len(r) for s, r in splits.items()} | {"vocab_size": len(tokenizer)}
