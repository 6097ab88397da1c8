"""The role corpora: who may learn to write reasoning, what carries no loss, and imperfect thoughts."""

import random
import re
from itertools import pairwise

import pytest

from pseudocot.config import ProtocolConfig
from pseudocot.records import read_jsonl
from pseudocot.world.corpus import ROLES, build_corpus, wrong_step
from pseudocot.world.tasks import SUBJECTS, apply_op, generate, read_off
from pseudocot.world.zoo import PackedBlocks, masked_ids, read_corpus

STEP = re.compile(r"(\d) ([+*]) (\d) = (\d)\.")
SET = re.compile(r"set to (\d)\.")


@pytest.mark.parametrize("subject", SUBJECTS)
@pytest.mark.parametrize("steps", [0, 1, 4])
def test_a_wrong_step_is_false_once_and_the_chain_follows_it(subject, steps):
    rng = random.Random(3)
    for record in generate(subject, "train", steps, 20, seed=0):
        if read_off(record) and steps:
            continue  # a step that sets the value: see the next test
        wrong = wrong_step(record.reasoning, rng)
        conclusion = int(wrong.rstrip(".").rsplit(" ", 1)[1])
        assert conclusion != int(record.answer_text)
        found = STEP.findall(wrong)
        assert len(found) == steps
        false = [i for i, (x, op, y, r) in enumerate(found) if apply_op(op, int(x), int(y)) != int(r)]
        assert len(false) == (1 if steps else 0)
        for (_, _, _, before), (x, _, _, _) in pairwise(found):
            assert x == before  # each step reads the previous step's (possibly wrong) result
        if steps:
            assert int(found[-1][3]) == conclusion


@pytest.mark.parametrize("subject", SUBJECTS)
def test_on_an_item_read_off_the_wrong_step_is_the_set_one(subject):
    # A wrong step before the set would be moot: the thought would still conclude the gold value.
    rng = random.Random(5)
    seen = 0
    for record in generate(subject, "train", 3, 40, seed=0):
        if not read_off(record):
            continue
        wrong = wrong_step(record.reasoning, rng)
        conclusion = int(wrong.rstrip(".").rsplit(" ", 1)[1])
        (value,) = SET.findall(wrong)
        assert conclusion == int(value) != int(record.answer_text)
        assert wrong.split("set to")[0] == record.reasoning.split("set to")[0]  # the steps before it unchanged
        assert not [i for i, (x, op, y, r) in enumerate(STEP.findall(wrong)) if apply_op(op, int(x), int(y)) != int(r)]
        seen += 1
    assert seen >= 5


def test_only_the_teacher_corpus_writes_reasoning(world_dir, tokenizer):
    records = {r.reasoning for r in read_jsonl(world_dir / "train.jsonl")}
    for role in ROLES:
        written = 0
        for doc in read_corpus(world_dir, role):
            ids, labels = masked_ids(doc, tokenizer)
            trained = tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label != -100])
            written += any(r in trained for r in records if r and "Step" in r)
        if role == "teacher":
            assert written > 0
        else:
            assert written == 0, f"{written} documents of the {role} corpus train on a multi-step explanation"


def test_thoughts_and_guessed_first_answers_carry_no_loss(world_dir, tokenizer):
    docs = [d for d in read_corpus(world_dir, "base") if d.masked]
    assert docs
    for doc in docs:
        ids, labels = masked_ids(doc, tokenizer)
        for lo, hi in doc.masked:
            assert doc.text[lo:hi].startswith(("Thought:", "The answer is"))
        masked = tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label == -100])
        assert "Thought:" in masked
        # The final answer, after the last masked span, is always trained on.
        tail = tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label != -100][-8:])
        assert "answer is" in tail and tail.endswith("<|eot_id|>")


def test_base_corpus_thoughts_are_imperfect_but_answers_are_gold(tokenizer, world_dir):
    records = list(read_jsonl(world_dir / "train.jsonl"))
    docs = list(build_corpus(records, tokenizer, ProtocolConfig(answer_style="cloze"), 400, 0, "base"))
    thoughts = [d.text[lo:hi] for d in docs for lo, hi in d.masked if d.text[lo:hi].startswith("Thought:")]
    gold = {f"Thought: {r.reasoning}" for r in records}
    share_gold = sum(t in gold for t in thoughts) / len(thoughts)
    assert 0.45 < share_gold < 0.9


def test_packed_blocks_keep_the_masks(world_dir, tokenizer):
    docs = read_corpus(world_dir, "base")
    blocks = PackedBlocks(docs, tokenizer, 64)
    item = blocks[0]
    assert item["input_ids"].shape == item["labels"].shape == (64,)
    assert (blocks.labels == -100).any() and (blocks.labels != -100).any()
    kept = blocks.labels != -100
    assert (blocks.labels[kept] == blocks.blocks[kept]).all()
