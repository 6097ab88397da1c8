"""The tiny world's two subjects: seeded generators of four-option multiple-choice items.

* ``tiny_math`` (standing for MMLU college mathematics): a chain of numbered operations modulo 10
  from a three-digit start ("Working modulo 10, start with 347. Step 1: add 5. Step 2: multiply by
  7. What is the result?").
* ``tiny_cs`` (standing for MMLU college computer science): tracing the variables of a short
  program whose arithmetic is modulo 10, each line reading the variable the line before set.

The difficulty of an item is its number of steps (operations, or assignments to trace), which is
also how long it looks; a 0-step item only asks to read a value off the question, which a model can
do directly. In a share of the items with steps (:data:`SET_SHARE`) the last step sets the value
("Step 3: set it to 4.", ``c = 4``): the steps before it are moot, so such an item is read off the
question whatever its length. Whether an item needs reasoning thus depends on what a model can do
(read a value off, or not), not on the item's subject or length.
Every gold explanation writes one line per step and ends by stating the value asked for, so that
a model reading it only has to match that value against the options.

Four operations are used, all bijective on digits: add 1, add 5, multiply by 3, multiply by 7
(3 and 7 are coprime with 10). So knowing part of the chain says nothing about the result, and a
model that does not carry out every step is at chance: this keeps hard items hard. The set is small
on purpose: one step is then a 40-fact table a tiny model can learn, where a 230-fact table (any
digit added or subtracted, multipliers 3, 7 and 9) leaves a 1.1M teacher writing step results right
55% of the time even when fed the gold explanation; ``benchmarks/step_table.py`` measures both
tables' learnability from scratch.

Beside them, at some levels, items that no reasoning can answer (:func:`unknown_item`): the chain
starts from the digit written on a numbered card, a fact that no question states and no model is
taught for the cards of the validation and test splits (cards are split like items, by a hash). They
stand for questions that rest on a fact the models lack, on which a chain of thought cannot help: the
base is as unsure there as on items that need their steps, so its uncertainty alone cannot tell a
router where a thought would help.

Splits are disjoint by construction: an item's split is a function of a hash of its content (the
start and the operations, or the program), not of its wording, so neither a question nor a
rephrasing of it can land in two splits; the test split is fixed by the seed.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator

from pseudocot.errors import PseudoCoTError
from pseudocot.records import LETTERS, Record

SUBJECTS = ("tiny_math", "tiny_cs")
SPLITS = ("train", "validation", "test")
NUM_CHOICES = 4

# Share of the hash space each split owns: train 80%, validation 10%, test 10%.
_SPLIT_BOUNDS = {"train": (0, 80), "validation": (80, 90), "test": (90, 100)}

_OPS = (("+", 1), ("+", 5), ("*", 3), ("*", 7))
SET = "="  # the operation that sets the value to its operand, used only as an item's last step
SET_SHARE = 0.4  # share of the items with steps whose last step sets the value
_VARIABLES = "abcdxyz"


def apply_op(op: str, x: int, y: int) -> int:
    if op == "+":
        return (x + y) % 10
    if op == SET:
        return y % 10
    return (x * y) % 10


def _random_op(rng: random.Random) -> tuple[str, int]:
    return rng.choice(_OPS)


def _random_ops(rng: random.Random, steps: int, ends_set: bool) -> list[tuple[str, int]]:
    ops = [_random_op(rng) for _ in range(steps)]
    if ends_set and steps:
        ops[-1] = (SET, rng.randrange(10))
    return ops


def read_off(record: Record) -> bool:
    """Whether an item's answer can be read off its question: no steps, or a last step that sets it."""
    return not record.difficulty or bool(record.reasoning and _SET_LINE in record.reasoning)


_SET_LINE = "set to"
_MATH_VERBS = {"+": "add {y}", "*": "multiply by {y}", SET: "set it to {y}"}
# "Modulo 10" comes first, as in the CS openings: no digit stands between the chain and the
# question's end except the chain's own. Steps are numbered, so a reasoner finds the next one by its
# number even when an operation repeats.
_MATH_OPENINGS = (
    "Working modulo 10, start with {x}.{ops} What is the result?",
    "Modulo 10: take the number {x}.{ops} What do you get?",
    "In arithmetic modulo 10, begin at {x}.{ops} What is the final value?",
)


Item = tuple[str, str, int, str]  # question, explanation, answer value, content key (wording-free)


def math_item(rng: random.Random, steps: int, ends_set: bool = False) -> Item:
    """One ``tiny_math`` question with ``steps`` operations (the last one setting the value if ``ends_set``).

    The chain starts from a three-digit number, so even a 0-step item ("Working modulo 10, start
    with 347. What is the result?") has a large space of distinct questions; reducing it is reading
    its last digit.
    """
    x = rng.randrange(100, 1000)
    ops = _random_ops(rng, steps, ends_set)
    phrases = "".join(f" Step {i}: {_MATH_VERBS[op].format(y=y)}." for i, (op, y) in enumerate(ops, 1))
    question = rng.choice(_MATH_OPENINGS).format(x=x, ops=phrases)
    value = x % 10
    lines = [f"{x} mod 10 = {value}."]
    for i, (op, y) in enumerate(ops, 1):
        new = apply_op(op, value, y)
        lines.append(f"Step {i}: {_SET_LINE} {y}." if op == SET else f"Step {i}: {value} {op} {y} = {new}.")
        value = new
    lines.append(f"So the result is {value}.")
    return question, " ".join(lines), value, f"{x}" + "".join(f" {op}{y}" for op, y in ops)


_CARD_OPENINGS = (
    "Working modulo 10, start with the digit on card {c}.{ops} What is the result?",
    "Modulo 10: take the digit on card {c}.{ops} What do you get?",
    "In arithmetic modulo 10, begin at the digit on card {c}.{ops} What is the final value?",
)


def card_digit(subject: str, card: int) -> int:
    """The digit written on a card: a fixed fact of the world that no question states."""
    return int(hashlib.sha256(f"{subject}/card/{card}".encode()).hexdigest()[:8], 16) % 10


def rests_on_a_card(explanation: str) -> bool:
    """Whether a gold explanation opens with a card's digit (:func:`unknown_item`)."""
    return explanation.startswith("Card ")


def unknowable(record: Record) -> bool:
    """Whether an item rests on a card's digit, which no question states (:func:`unknown_item`)."""
    return "card" in record.question


_CS_OPENINGS = (
    "All arithmetic in this program is modulo 10. What does it print?",
    "The program below works on digits, modulo 10. What is printed?",
    "Trace this program (values are taken modulo 10). What is its output?",
)


def cs_item(rng: random.Random, steps: int, ends_set: bool = False) -> Item:
    """One ``tiny_cs`` question with ``steps`` assignments to trace (the last one of a digit if ``ends_set``).

    Two variables are set to digits; each step assigns ``target = source op digit`` where the
    source is the previous step's target (so every step matters; the first step reads the second
    variable set). The program prints the last variable assigned, so a 0-step item is answered by
    reading the last value set.
    """
    names = rng.sample(_VARIABLES, k=len(_VARIABLES))
    env = {names[0]: rng.randrange(10), names[1]: rng.randrange(10)}
    code = [f"{names[0]} = {env[names[0]]}", f"{names[1]} = {env[names[1]]}"]
    trace = [f"{names[0]} = {env[names[0]]}.", f"{names[1]} = {env[names[1]]}."]
    source = _run(rng, names, env, _random_ops(rng, steps, ends_set), code, trace)
    question = rng.choice(_CS_OPENINGS) + "\n" + "\n".join(code)
    return question, " ".join(trace), env[source], ";".join(code)


def _run(
    rng: random.Random, names: list[str], env: dict[str, int], ops: list[tuple[str, int]], code: list, trace: list
) -> str:
    """Appends a program's steps (each reading the variable the step before set) and its print to ``code``
    and their trace to ``trace``; returns the variable printed. The first step reads ``names[1]``."""
    source = names[1]
    for op, y in ops:
        target = rng.choice([n for n in names[:5] if n != source])
        value = apply_op(op, env[source], y)
        if op == SET:
            code.append(f"{target} = {y}")
            trace.append(f"{target} is {_SET_LINE} {y}.")
        else:
            code.append(f"{target} = {source} {op} {y}")
            trace.append(f"{target} = {source} {op} {y} = {env[source]} {op} {y} = {value}.")
        env[target] = value
        source = target
    code.append(f"print({source})")
    trace.append(f"So it prints {env[source]}.")
    return source


def unknown_item(subject: str, rng: random.Random, steps: int) -> tuple[Item, int]:
    """One item of ``subject`` with ``steps`` operations from the digit on a card, and the card's number.

    In ``tiny_math`` the chain starts "with the digit on card 347"; in ``tiny_cs`` the variable the
    first step reads is ``card(347)``. The gold explanation opens with the fact ("Card 347 shows 6.")
    and then carries out the steps as in the subject's other items; no step sets the value.
    """
    card = rng.randrange(100, 1000)
    digit = card_digit(subject, card)
    ops = _random_ops(rng, steps, ends_set=False)
    fact = f"Card {card} shows {digit}."
    if subject == "tiny_math":
        phrases = "".join(f" Step {i}: {_MATH_VERBS[op].format(y=y)}." for i, (op, y) in enumerate(ops, 1))
        question = rng.choice(_CARD_OPENINGS).format(c=card, ops=phrases)
        value, lines = digit, [fact]
        for i, (op, y) in enumerate(ops, 1):
            new = apply_op(op, value, y)
            lines.append(f"Step {i}: {value} {op} {y} = {new}.")
            value = new
        lines.append(f"So the result is {value}.")
        return (question, " ".join(lines), value, f"card{card}" + "".join(f" {op}{y}" for op, y in ops)), card
    names = rng.sample(_VARIABLES, k=len(_VARIABLES))
    env = {names[0]: rng.randrange(10), names[1]: digit}
    code = [f"{names[0]} = {env[names[0]]}", f"{names[1]} = card({card})"]
    trace = [fact, f"{names[0]} = {env[names[0]]}.", f"{names[1]} = card({card}) = {digit}."]
    source = _run(rng, names, env, ops, code, trace)
    question = rng.choice(_CS_OPENINGS) + "\n" + "\n".join(code)
    return (question, " ".join(trace), env[source], ";".join(code)), card


_GENERATORS: dict[str, Callable[[random.Random, int, bool], Item]] = {
    "tiny_math": math_item,
    "tiny_cs": cs_item,
}


def split_of(subject: str, key: str) -> str:
    """The split that owns an item: a pure function of its content key, so splits never overlap."""
    bucket = int(hashlib.sha256(f"{subject}\n{key}".encode()).hexdigest()[:8], 16) % 100
    return next(s for s, (lo, hi) in _SPLIT_BOUNDS.items() if lo <= bucket < hi)


def _choices(rng: random.Random, answer: int) -> tuple[list[str], str]:
    distractors = rng.sample([d for d in range(10) if d != answer], k=NUM_CHOICES - 1)
    position = rng.randrange(NUM_CHOICES)
    options = distractors[:position] + [answer] + distractors[position:]
    return [str(o) for o in options], LETTERS[position]


def generate(subject: str, split: str, steps: int, count: int, seed: int, unknown: bool = False) -> list[Record]:
    """``count`` distinct items of one subject, split and difficulty, fixed by ``seed``; with ``unknown``,
    items that rest on a card's digit (:func:`unknown_item`), split by their card.

    Raises:
        PseudoCoTError: if the subject or split is unknown, or the space of distinct questions of
            that difficulty is too small to hold ``count`` items in this split.
    """
    if subject not in _GENERATORS:
        raise PseudoCoTError(f"unknown tiny-world subject {subject!r}; choose one of {', '.join(SUBJECTS)}.")
    if split not in SPLITS:
        raise PseudoCoTError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
    family = "card" if unknown else ""
    rng = random.Random(f"{seed}/{subject}/{split}/{steps}" + (f"/{family}" if family else ""))
    seen: set[str] = set()
    records: list[Record] = []
    attempts = 0
    while len(records) < count:
        attempts += 1
        if attempts > 50 * count + 10_000:
            raise PseudoCoTError(
                f"only {len(records)} distinct {subject} items with {steps} steps fit the {split} "
                f"split; ask for fewer than {count} (world.{split}_per_level)."
            )
        if unknown:
            (question, explanation, value, key), card = unknown_item(subject, rng, steps)
            owner = split_of(subject, f"card {card}")  # every item on a card lands in the card's split
        else:
            ends_set = steps > 0 and rng.random() < SET_SHARE
            question, explanation, value, key = _GENERATORS[subject](rng, steps, ends_set)
            owner = split_of(subject, key)
        if key in seen or owner != split:
            continue
        seen.add(key)
        choices, answer = _choices(rng, value)
        records.append(
            Record(
                id=f"{subject}-{split}-{steps}-{family}{len(records)}",
                source=subject,
                subject=subject,
                question=question,
                choices=choices,
                answer=answer,
                reasoning=explanation,
                difficulty=steps,
            )
        )
    return records


def generate_split(
    split: str,
    per_level: int,
    levels: list[int],
    seed: int,
    subjects: tuple[str, ...] = SUBJECTS,
    unknown_levels: tuple[int, ...] = (),
    unknown_share: float = 0.0,
) -> Iterator[Record]:
    """Every subject and difficulty level of one split, ``per_level`` items each; at each of
    ``unknown_levels``, ``unknown_share`` of ``per_level`` items that rest on a card's digit besides."""
    for subject in subjects:
        for steps in levels:
            yield from generate(subject, split, steps, per_level, seed)
            if steps in unknown_levels and round(unknown_share * per_level):
                yield from generate(subject, split, steps, round(unknown_share * per_level), seed, unknown=True)
