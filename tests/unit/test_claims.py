"""The tiny world's claims read from a run's files: the subject-and-length rule and the router's comparisons."""

import json

import pytest

from pseudocot.world.claims import ALWAYS, SYSTEM, TUNED, Items, check_claims


def _item(row, benchmark, difficulty, n, correct, thought=False):
    return {
        "system": row,
        "benchmark": benchmark,
        "id": f"{benchmark}-{difficulty}-{n}",
        "difficulty": difficulty,
        "correct": correct,
        "thoughts": ["t"] if thought else [],
        "flops": 1.0,
    }


def _items(router_calls):
    """Math items of lengths 0 and 3, ten each. The base knows every length-0 item and half the
    length-3 ones (those with an even index); a thought makes every item right."""
    items = []
    for d in (0, 3):
        for n in range(10):
            knows = d == 0 or n % 2 == 0
            items.append(_item(TUNED, "tiny:math", d, n, knows))
            items.append(_item(ALWAYS, "tiny:math", d, n, True, thought=True))
            called = router_calls(d, n)
            items.append(_item(SYSTEM, "tiny:math", d, n, knows or called, thought=called))
    return items


def test_rule_fills_the_best_cells_first_and_the_last_in_part():
    items = Items(_items(lambda d, n: False), hard_min_steps=3)
    assert items.rule_accuracy(0) == pytest.approx(15 / 20)
    # Ten calls on the length-3 cell fix its five wrong items; four calls fix two on average.
    assert items.rule_accuracy(10) == pytest.approx(1.0)
    assert items.rule_accuracy(4) == pytest.approx(17 / 20)
    assert items.rule_accuracy(20) == pytest.approx(1.0)


def _write_run(tmp_path, items, auroc, auroc_entropy):
    (tmp_path / "eval").mkdir()
    (tmp_path / "system").mkdir()
    other = [
        _item(row, "tiny:cs" if b else "tiny:math", d, n, True)
        for row in ("base", "base + own CoT", "teacher + own CoT")
        for b in (0, 1)
        for d in (0, 3)
        for n in range(2)
    ]
    cs = [dict(i, benchmark="tiny:cs") for i in items]
    (tmp_path / "eval" / "results.json").write_text(json.dumps({"items": items + cs + other}))
    metrics = {"validation": {"auroc": auroc, "auroc_entropy": auroc_entropy}}
    (tmp_path / "system" / "manifest.json").write_text(json.dumps({"metrics": metrics}))


def _claim(claims, start):
    return next(c for c in claims if c.name.startswith(start))


def test_a_router_that_knows_what_the_base_knows_beats_the_rule(tmp_path):
    # It calls exactly the five length-3 items the base gets wrong; the rule, with five calls, fixes 2.5.
    _write_run(tmp_path, _items(lambda d, n: d == 3 and n % 2 == 1), auroc=0.9, auroc_entropy=0.8)
    claims = check_claims(tmp_path)
    rule = _claim(claims, "router: accuracy over the subject-and-length rule")
    assert rule.value == pytest.approx(2.5 / 20) and rule.holds
    assert _claim(claims, "router: share given a thought, math").value == pytest.approx(0.25)
    assert _claim(claims, "router: AUROC over the entropy").holds


def test_a_router_that_reads_length_does_not(tmp_path):
    _write_run(tmp_path, _items(lambda d, n: d == 3), auroc=0.7, auroc_entropy=0.75)
    claims = check_claims(tmp_path)
    assert _claim(claims, "router: accuracy over the subject-and-length rule").value == pytest.approx(0.0)
    assert not _claim(claims, "router: accuracy over the subject-and-length rule").holds
    assert not _claim(claims, "router: AUROC over the entropy").holds
    assert not _claim(claims, "router: AUROC of 'a thought helps'").holds


def test_the_concluded_value_reads_each_models_own_reasoning():
    def cot(row, n, value):
        return {**_item(row, "tiny:math", 3, n, False, thought=True), "thoughts": [f"x = 2. So it prints {value}."]}

    rows = {"teacher + own CoT": 10, "mid + own CoT": 8, "TTM + own CoT": 9}  # items of ten concluding right
    items = [
        {**cot(row, n, 7 if n < right else 3), "reference": "x = 2. So it prints 7."}
        for row, right in rows.items()
        for n in range(10)
    ]
    got = Items(items, hard_min_steps=3)
    assert got.concluded("mid + own CoT") == pytest.approx(0.8)
    assert got.concluded("TTM + own CoT", hard=True) == pytest.approx(0.9)
    assert got.concluded("TTM + own CoT", hard=False) != got.concluded("TTM + own CoT", hard=False)  # none: nan


def test_the_distillation_order_on_validation_is_checked_when_given(tmp_path):
    _write_run(tmp_path, _items(lambda d, n: d == 3 and n % 2 == 1), auroc=0.9, auroc_entropy=0.8)
    assert not any("validation" in c.name for c in check_claims(tmp_path))
    claims = check_claims(tmp_path, reasoning={"teacher": 0.95, "mid": 0.98, "TTM": 0.99})
    mid = _claim(claims, "distillation: mid's reasoning over the teacher's (gold value concluded, validation)")
    ttm = _claim(claims, "distillation: TTM's reasoning over the mid's (gold value concluded, validation)")
    assert mid.value == pytest.approx(0.03) and not mid.holds  # beyond the 2-point margin
    assert ttm.value == pytest.approx(0.01) and ttm.holds


def test_a_figure_at_its_threshold_clears_it(tmp_path):
    _write_run(tmp_path, _items(lambda d, n: d == 3 and n % 2 == 1), auroc=0.9, auroc_entropy=0.8)
    claims = check_claims(tmp_path, reasoning={"teacher": 1.0, "mid": 0.98, "TTM": 1.0})
    ttm = _claim(claims, "distillation: TTM's reasoning over the mid's (gold value concluded, validation)")
    assert ttm.value > 0.02 and ttm.holds  # 1.0 - 0.98 is 0.020000000000000018 in floats
    claims = check_claims(tmp_path, reasoning={"teacher": 1.0, "mid": 0.979, "TTM": 1.0})
    assert not _claim(claims, "distillation: TTM's reasoning over the mid's (gold value concluded, validation)").holds


def _unsure(items, probs_of):
    """The items with the fine-tuned base's first-answer confidence that ``probs_of(difficulty, n)`` gives."""
    for item in items:
        if item["system"] == TUNED:
            d, n = item["difficulty"], int(item["id"].rsplit("-", 1)[1])
            item["confidence"] = probs_of(d, n)
    return items


def test_entropy_policy_thinks_on_the_least_sure_first():
    # The base is sure of the length-0 items, unsure of every length-3 one (right or wrong).
    sure, unsure = [1.0, 0.0, 0.0, 0.0], [0.25] * 4
    items = Items(_unsure(_items(lambda d, n: False), lambda d, n: sure if d == 0 else unsure), hard_min_steps=3)
    assert items.entropy_accuracy(0) == pytest.approx(15 / 20)
    assert items.entropy_accuracy(10) == pytest.approx(1.0)
    assert items.entropy_accuracy(4) == pytest.approx(17 / 20)  # four of ten equally unsure: two fixed on average
    # Surer of the items it gets right: the entropy policy then finds the wrong ones first.
    leaning = [0.7, 0.1, 0.1, 0.1]
    items = Items(
        _unsure(_items(lambda d, n: False), lambda d, n: sure if d == 0 else (leaning if n % 2 == 0 else unsure)),
        hard_min_steps=3,
    )
    assert items.entropy_accuracy(5) == pytest.approx(1.0)


def test_a_router_beats_entropy_only_where_the_base_is_unsure_alike(tmp_path):
    # Equally unsure of every length-3 item: the router, calling exactly the five wrong ones, fixes five;
    # the entropy policy, with five calls among ten alike, fixes 2.5.
    unsure = [0.25] * 4
    items = _unsure(_items(lambda d, n: d == 3 and n % 2 == 1), lambda d, n: [1.0, 0, 0, 0] if d == 0 else unsure)
    _write_run(tmp_path, items, auroc=0.9, auroc_entropy=0.8)
    claim = _claim(check_claims(tmp_path), "router: accuracy over the entropy policy")
    assert claim.value == pytest.approx(2.5 / 20) and claim.holds
    # When its confidence already says which are wrong, entropy does as well as the router.
    tmp = tmp_path / "b"
    tmp.mkdir()
    items = _unsure(
        _items(lambda d, n: d == 3 and n % 2 == 1),
        lambda d, n: [1.0, 0, 0, 0] if d == 0 or n % 2 == 0 else unsure,
    )
    _write_run(tmp, items, auroc=0.9, auroc_entropy=0.8)
    claim = _claim(check_claims(tmp), "router: accuracy over the entropy policy")
    assert claim.value == pytest.approx(0.0) and not claim.holds


def test_results_without_confidences_fail_the_entropy_claim(tmp_path):
    _write_run(tmp_path, _items(lambda d, n: d == 3 and n % 2 == 1), auroc=0.9, auroc_entropy=0.8)
    assert not _claim(check_claims(tmp_path), "router: accuracy over the entropy policy").holds


def test_reasoning_is_not_scored_on_items_that_rest_on_a_card():
    def cot(n, reference, concluded):
        item = _item("TTM + own CoT", "tiny:math", 1, n, False, thought=True)
        return {**item, "thoughts": [f"So the result is {concluded}."], "reference": reference}

    items = [cot(n, "Step 1: 2 + 5 = 7. So the result is 7.", 7 if n < 8 else 3) for n in range(10)]
    items += [cot(10 + n, "Card 915 shows 2. Step 1: 2 + 5 = 7. So the result is 7.", 7) for n in range(5)]
    assert Items(items, hard_min_steps=3).concluded("TTM + own CoT") == pytest.approx(0.8)
