"""Answer extraction on real-looking outputs; accuracy by group; BLEU/ROUGE as their libraries; bootstrap, McNemar."""

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from pseudocot.eval.metrics import (
    bleu,
    bootstrap_interval,
    difficulty_group,
    grouped_accuracy,
    grouped_share,
    last_digit,
    mcnemar,
    rouge_l,
)
from pseudocot.infer.choice import extract_choice, is_right
from pseudocot.records import Record

CHOICES = ["O(n)", "O(n log n)", "O(1)", "None of the above"]


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("B", 1),
        ("(B)", 1),
        ("B.", 1),
        ("B) O(n log n)", 1),
        ("The answer is B", 1),
        ("The answer is (C).", 2),
        ("The best answer is D", 3),
        ("Let me think. A looks tempting, but the correct answer is: C", 2),
        ("Answer: A", 0),
        ("the answer is b", 1),
        ("The answer is O(1).", 2),
        ("O(n log n)", 1),
        ("None of the above", 3),
        ("It could be A or B, hard to say.", None),
        ("The answer is E", None),  # not an option
        ("I don't know.", None),
        ("", None),
        ("The answer is 7.", None),
    ],
)
def test_answer_extraction(output, expected):
    assert extract_choice(output, CHOICES) == expected


def test_option_text_is_matched_whole_not_inside_other_options():
    assert extract_choice("The answer is 1.", ["1", "10", "11", "21"]) == 0
    assert extract_choice("It is 10, I think", ["1", "10", "11", "21"]) == 1


def test_bleu_and_rouge_equal_the_libraries():
    hyps = ["the cat sat on the mat", "3 + 4 = 7. So the result is 7."]
    refs = ["the cat is on the mat", "3 + 4 = 7. So the result is 7."]
    assert bleu(hyps, refs) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = sum(scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs, strict=True)) / 2
    assert rouge_l(hyps, refs) == pytest.approx(expected)
    assert rouge_l(hyps[1:], refs[1:]) == pytest.approx(1.0)


def test_bootstrap_interval_covers_the_mean_with_the_expected_width():
    assert bootstrap_interval([1.0] * 50) == (1.0, 1.0)
    low, high = bootstrap_interval([1.0, 0.0] * 200, samples=2000)
    # The binomial standard error at p = 0.5, n = 400 is 0.025: a 95% interval is about +-0.049.
    assert low == pytest.approx(0.451, abs=0.01) and high == pytest.approx(0.549, abs=0.01)


def test_mcnemar_on_constructed_cases():
    assert mcnemar([True] * 10, [False] * 10) == {"a_only": 10, "b_only": 0, "p_value": pytest.approx(2 * 0.5**10)}
    same = mcnemar([True, False, True], [True, False, True])
    assert same["p_value"] == 1.0 and same["a_only"] == same["b_only"] == 0
    balanced = mcnemar([True] * 5 + [False] * 5, [False] * 5 + [True] * 5)
    assert balanced["p_value"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="different numbers of items"):
        mcnemar([True], [True, False])


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("The answer is a prime number, O(1).", 2),
        ("So the answer is B. This answer is a classic.", 1),
        ("Answer: I think it is C", 2),
        ("The answer is **B**", 1),
        ("The answer is (b)", 1),
    ],
)
def test_articles_and_pronouns_are_not_option_letters(output, expected):
    assert extract_choice(output, CHOICES) == expected


def test_accuracy_by_group_counts_no_pick_as_wrong_and_leaves_middle_steps_out_of_easy_and_hard():
    records = [
        Record(id=str(i), source="t", subject="math", question="q", choices=["1", "2"], answer="B", difficulty=d)
        for i, d in enumerate([0, 0, 2, 3, 4])
    ]
    picks = [1, None, 0, 1, 0]
    assert [is_right(r, c) for r, c in zip(records, picks, strict=True)] == [True, False, False, True, False]
    assert [difficulty_group(r, 0, 3) for r in records] == ["easy", "easy", None, "hard", "hard"]
    assert difficulty_group(records[0], None, None) is None
    accuracy = grouped_accuracy(records, picks, 0, 3, prefix="direct/")
    assert accuracy["direct/easy"] == 0.5 and accuracy["direct/hard"] == 0.5 and accuracy["direct/all"] == 0.4
    assert accuracy["direct/math/2"] == 0.0 and accuracy["direct/math/all"] == 0.4


def test_a_thought_concludes_the_value_it_ends_with():
    assert last_digit("x = 3. y = x + 5 = 8. So it prints 8.") == "8"
    assert last_digit("So the result is 10 mod 10 = 0.") == "0"
    assert last_digit("no digits here") is None
    records = [
        Record(id=str(i), source="t", subject="math", question="q", choices=["1", "2"], answer="B", difficulty=d)
        for i, d in enumerate([0, 3, 4])
    ]
    concludes = [
        last_digit(t) == last_digit(r.answer_text) for t, r in zip(["... 2.", "... 1.", "2"], records, strict=True)
    ]
    share = grouped_share(records, concludes, 0, 3)
    assert share["easy"] == 1.0 and share["hard"] == 0.5 and share["all"] == pytest.approx(2 / 3)


def test_thought_quality_counts_the_concluded_value_over_the_items_a_reasoning_can_conclude(monkeypatch):
    """Every item is still written and answered; only the concluded value leaves out what cannot be concluded."""
    from types import SimpleNamespace

    from pseudocot.config import ProtocolConfig
    from pseudocot.eval import thoughts

    records = [
        Record(id=str(i), source="t", subject="math", question="q", choices=["1", "2"], answer="B", difficulty=d)
        for i, d in enumerate([1, 1, 3, 3])
    ]
    written = ["So 2.", "So 1.", "So 2.", "So 1."]  # concludes: yes, no, yes, no
    model = SimpleNamespace(eval=lambda: model, num_parameters=lambda: 7)
    monkeypatch.setattr(thoughts, "load_tokenizer", lambda ref: "tokenizer")
    monkeypatch.setattr(thoughts, "load_model", lambda ref: model)
    monkeypatch.setattr(thoughts, "check_same_tokenizer", lambda *args: None)
    monkeypatch.setattr(
        thoughts, "write_thoughts", lambda *args: SimpleNamespace(texts=written, generated_tokens=[3] * 4)
    )
    monkeypatch.setattr(thoughts, "answer_given", lambda *args: SimpleNamespace(choices=[1, 1, 1, 0]))
    quality = {
        mask: thoughts.thought_quality("base", {"TTM": "ttm"}, records, ProtocolConfig(), 0, 3, can_conclude=mask)
        for mask in (None, (True, False, True, True))
    }
    every, some = quality[None]["TTM"], quality[(True, False, True, True)]["TTM"]
    assert every["concludes"] == some["concludes"] == [True, False, True, False]
    assert every["concluded"]["all"] == 0.5 and every["concluded"]["math/1"] == 0.5
    assert some["concluded"]["all"] == pytest.approx(2 / 3) and some["concluded"]["math/1"] == 1.0
    assert some["concluded"]["hard"] == every["concluded"]["hard"] == 0.5
    assert some["accuracy"] == every["accuracy"] and some["accuracy"]["all"] == 0.75
