from collections import Counter

import pytest

from pseudocot.data.mix import stratified_shuffle


def shard_counts(items: list[str], shards: int) -> list[Counter[str]]:
    """How many items of each label fall in each of ``shards`` consecutive, near-equal shards."""
    bounds = [round(i * len(items) / shards) for i in range(shards + 1)]
    return [Counter(items[bounds[i] : bounds[i + 1]]) for i in range(shards)]


@pytest.mark.parametrize("sizes", [(600, 300, 100), (50, 50), (997, 13, 401)])
@pytest.mark.parametrize("shards", [2, 5, 8])
def test_every_shard_holds_each_source_in_proportion(sizes, shards):
    groups = [[f"s{g}"] * n for g, n in enumerate(sizes)]
    merged = stratified_shuffle(groups, seed=3)
    assert sorted(merged) == sorted(x for g in groups for x in g)
    total = sum(sizes)
    for counts in shard_counts(merged, shards):
        shard = sum(counts.values())
        for g, n in enumerate(sizes):
            assert abs(counts[f"s{g}"] - shard * n / total) <= 1.5


def test_every_window_is_stratified_not_just_shards():
    merged = stratified_shuffle([["a"] * 300, ["b"] * 100], seed=0)
    for start in range(0, 400 - 40, 7):
        assert 28 <= merged[start : start + 40].count("a") <= 32


def test_shuffle_is_seeded_and_shuffles_within_sources():
    groups = [list(range(100)), list(range(100, 150))]
    a, b, c = (stratified_shuffle(groups, seed=s) for s in (1, 1, 2))
    assert a == b and a != c
    firsts = [x for x in a if x < 100]
    assert firsts != sorted(firsts)


def test_shard_counts_cover_everything():
    counts = shard_counts(["x"] * 10 + ["y"] * 3, 4)
    assert sum(sum(c.values()) for c in counts) == 13
