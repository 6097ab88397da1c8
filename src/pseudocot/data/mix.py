"""Merging several sources with a seeded stratified shuffle (paper 4.1).

The paper merges its reasoning datasets and shuffles them "so that every subset holds the same
share of each source dataset". :func:`stratified_shuffle` does that exactly: each source is
shuffled on its own, then the sources are interleaved at evenly spaced positions, so any run of
consecutive items (a shard, a batch, one of N splits) holds each source in proportion to its size,
within one item.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def stratified_shuffle(groups: Sequence[Sequence[T]], seed: int) -> list[T]:
    """Shuffles each group, then interleaves them so every window holds each group in proportion.

    Item ``j`` of a group of size ``n`` is placed at the fractional position ``(j + u) / n`` with
    one seeded offset ``u`` in [0, 1) per group; sorting all items by position spreads each group
    evenly over the whole list.
    """
    rng = random.Random(seed)
    keyed: list[tuple[float, float, T]] = []
    for group in groups:
        items = list(group)
        rng.shuffle(items)
        offset = rng.random()
        keyed += [((j + offset) / len(items), rng.random(), item) for j, item in enumerate(items)]
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [item for _, _, item in keyed]
