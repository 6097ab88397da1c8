import random
import re

import pytest

from pseudocot.errors import PseudoCoTError
from pseudocot.world.tasks import (
    SUBJECTS,
    card_digit,
    cs_item,
    generate,
    generate_split,
    math_item,
    read_off,
    unknowable,
)


@pytest.mark.parametrize("subject", SUBJECTS)
def test_generation_is_fixed_by_seed(subject):
    a = generate(subject, "test", 3, 10, seed=7)
    b = generate(subject, "test", 3, 10, seed=7)
    c = generate(subject, "test", 3, 10, seed=8)
    assert a == b and a != c


def _content(record):
    """The item without its wording: the program lines, or the numbers and operations."""
    if record.subject == "tiny_cs":
        return tuple(record.question.splitlines()[1:])
    return tuple(re.findall(r"\d+|add|subtract|multiply", record.question))


def test_splits_are_disjoint_even_across_rephrasings():
    seen = {}
    for split in ("train", "validation", "test"):
        for r in generate_split(split, 40, [0, 1, 2], seed=0):
            assert seen.setdefault((r.subject, _content(r)), split) == split


@pytest.mark.parametrize("subject", SUBJECTS)
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_items_are_well_formed(subject, steps):
    for r in generate(subject, "train", steps, 25, seed=1):
        assert len(r.choices) == 4 and len(set(r.choices)) == 4
        assert r.difficulty == steps
        # The explanation's last sentence states the gold option's value.
        assert re.search(r"(is|prints) (\d)\.$", r.reasoning).group(2) == r.answer_text


def test_math_explanation_steps_compute_mod_10():
    question, explanation, value, _ = math_item(random.Random(0), 5)
    first, *steps, last = explanation.split(". ")
    start, _, _, _, reduced = first.split()
    assert start in question and int(start) % 10 == int(reduced)
    assert len(steps) == 5
    previous = reduced
    for number, line in enumerate(steps, 1):
        label, computed = line.split(": ")
        assert label == f"Step {number}" and f"{label}: " in question
        x, op, y, _, z = computed.split()
        verb = {"+": "add", "*": "multiply by"}[op]
        assert f"{label}: {verb} {y}." in question and x == previous
        previous = z
        assert eval(f"({x} {op} {y}) % 10") == int(z)
        assert (op, int(y)) in {("+", 1), ("+", 5), ("*", 3), ("*", 7)}
    assert last == f"So the result is {value}."


def test_zero_step_items_are_read_off_the_question():
    for seed in range(20):
        question, _, value, key = math_item(random.Random(seed), 0)
        assert key.isdigit() and key in question and int(key) % 10 == value
    question, _, value, _ = cs_item(random.Random(3), 0)
    lines = question.splitlines()
    assert lines[-1] == f"print({lines[-2][0]})" and lines[-2].endswith(f"= {value}")


def test_cs_trace_matches_executing_the_program():
    for seed in range(30):
        question, _, value, _ = cs_item(random.Random(seed), 4)
        env: dict = {}
        for line in question.splitlines()[1:]:
            if line.startswith("print("):
                printed = env[line[6:-1]]
            else:
                target, expr = line.split(" = ")
                env[target] = eval(expr, {}, dict(env)) % 10
        assert printed == value
        assert " - ".join([target] * 2) not in question  # x - x would leak the answer


def test_an_item_whose_last_step_sets_the_value_is_read_off_whatever_its_length():
    question, explanation, value, _ = math_item(random.Random(4), 4, ends_set=True)
    assert question.rsplit(". ", 2)[-2].endswith(f"Step 4: set it to {value}")
    assert explanation.endswith(f"Step 4: set to {value}. So the result is {value}.")
    question, explanation, value, _ = cs_item(random.Random(4), 4, ends_set=True)
    lines = question.splitlines()
    assert lines[-2] == f"{lines[-1][6:-1]} = {value}" and explanation.endswith(f"So it prints {value}.")
    for subject in SUBJECTS:
        records = generate(subject, "train", 2, 200, seed=0)
        share = sum(map(read_off, records)) / len(records)
        assert 0.3 < share < 0.5  # SET_SHARE is 0.4
        assert read_off(generate(subject, "train", 0, 1, seed=0)[0])


def test_answer_positions_are_balanced():
    letters = [r.answer for r in generate_split("train", 200, [2], seed=0)]
    for letter in "ABCD":
        assert 0.18 < letters.count(letter) / len(letters) < 0.32


def test_too_many_items_for_the_space_is_a_clear_error():
    with pytest.raises(PseudoCoTError, match="distinct tiny_math items with 0 steps fit the test split"):
        generate("tiny_math", "test", 0, 1000, seed=0)
    with pytest.raises(PseudoCoTError, match="unknown tiny-world subject"):
        generate("tiny_bio", "test", 1, 5, seed=0)


def _card(record):
    return int(re.search(r"card\W?(\d+)", record.question)[1])


@pytest.mark.parametrize("subject", SUBJECTS)
def test_card_items_rest_on_the_cards_digit_and_no_card_is_in_two_splits(subject):
    owner = {}
    for split in ("train", "validation", "test"):
        records = generate(subject, split, 2, 30, seed=0, unknown=True)
        assert all(unknowable(r) and not read_off(r) and r.difficulty == 2 for r in records)
        for r in records:
            card = _card(r)
            assert owner.setdefault(card, split) == split
            digit = card_digit(subject, card)
            # The explanation states the card's digit and carries the steps from it to the gold value.
            assert r.reasoning.startswith(f"Card {card} shows {digit}.")
            assert re.search(r"(is|prints) (\d)\.$", r.reasoning)[2] == r.answer_text


def test_card_items_come_besides_the_levels_items_and_leave_them_unchanged():
    plain = list(generate_split("test", 20, [0, 1, 2], seed=0))
    mixed = list(generate_split("test", 20, [0, 1, 2], seed=0, unknown_levels=(1, 2), unknown_share=0.25))
    assert [r for r in mixed if not unknowable(r)] == plain
    cards = [r for r in mixed if unknowable(r)]
    assert len(cards) == 2 * 2 * 5 and {r.difficulty for r in cards} == {1, 2}
    assert not any(unknowable(r) for r in plain)


def test_card_items_reach_neither_the_tokenizer_nor_any_corpus(tmp_path):
    from pseudocot.config import ProtocolConfig, WorldConfig
    from pseudocot.records import read_jsonl
    from pseudocot.world.build import build_world

    sizes = {"train_per_level": 20, "validation_per_level": 5, "test_per_level": 5, "corpus_documents": 100}
    protocol = ProtocolConfig(answer_style="cloze")
    (tmp_path / "plain").mkdir()
    (tmp_path / "cards").mkdir()
    build_world(WorldConfig(**sizes), protocol, tmp_path / "plain")
    build_world(WorldConfig(**sizes, unknown_levels=[1, 2], unknown_share=0.4), protocol, tmp_path / "cards")
    train = [r for r in read_jsonl(tmp_path / "cards" / "train.jsonl") if unknowable(r)]
    assert len(train) == 2 * 2 * 8 and all(r.reasoning is None for r in train)  # no reasoning finds a fact
    test = [r for r in read_jsonl(tmp_path / "cards" / "test.jsonl") if unknowable(r)]
    assert test and all(r.reasoning.startswith("Card ") for r in test)  # the reference the evaluation reads
    for path in ("tokenizer/tokenizer.json", "corpus/base.jsonl", "corpus/teacher.jsonl"):
        assert (tmp_path / "plain" / path).read_bytes() == (tmp_path / "cards" / path).read_bytes()
