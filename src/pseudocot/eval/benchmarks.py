"""Benchmarks by name: the tiny world's subjects and MMLU subjects, as lists of records.

* ``tiny:math`` and ``tiny:cs``: a split of the built tiny world (each item has a gold explanation).
* ``mmlu:SUBJECT`` (e.g. ``mmlu:college_mathematics``): from ``mmlu_dir`` when it is set, in either
  layout, the original Hendrycks CSV files (``<subject>_test.csv``) or a ``cais/mmlu`` parquet
  snapshot (``<subject>/test-*.parquet``); otherwise through ``datasets`` from the hub ``cais/mmlu``.

BLEU and ROUGE-L need a reference text: an item's explanation where the data has one (the tiny
world), else the gold option's text (MMLU); :func:`reference` says which.
"""

from __future__ import annotations

from pathlib import Path

from pseudocot.config import SourceConfig
from pseudocot.data.loaders import load_source
from pseudocot.errors import PseudoCoTError
from pseudocot.records import Record

TINY_SUBJECTS = {"math": "tiny_math", "cs": "tiny_cs"}


def benchmark_source(name: str, mmlu_dir: str | None) -> SourceConfig:
    """The data source a benchmark name stands for.

    Raises:
        PseudoCoTError: the name is not ``tiny:math``, ``tiny:cs`` or ``mmlu:SUBJECT``.
    """
    family, _, subject = name.partition(":")
    if family == "tiny" and subject in TINY_SUBJECTS:
        return SourceConfig(name=name, kind="tiny", path=TINY_SUBJECTS[subject])
    if family == "mmlu" and subject:
        if mmlu_dir is None:
            return SourceConfig(name=name, kind="hf", path="cais/mmlu", subject=subject)
        layout = "mmlu_parquet" if any(Path(mmlu_dir).glob(f"{subject}/*.parquet")) else "mmlu_csv"
        return SourceConfig(name=name, kind=layout, path=mmlu_dir, subject=subject)
    raise PseudoCoTError(
        f"unknown benchmark {name!r}; use tiny:math, tiny:cs or mmlu:SUBJECT (e.g. mmlu:college_mathematics)."
    )


def load_benchmark(
    name: str, split: str, mmlu_dir: str | None = None, world_dir: Path | None = None, limit: int | None = None
) -> list[Record]:
    """The multiple-choice items of one benchmark's split (the first ``limit`` of them).

    Raises:
        PseudoCoTError: an unknown name, a missing file, or a split with no usable item.
    """
    source = benchmark_source(name, mmlu_dir)
    if source.kind == "tiny" and (world_dir is None or not Path(world_dir).is_dir()):
        raise PseudoCoTError(f"benchmark {name} needs the tiny world; add a world section and run its stage.")
    loaded = load_source(source, split, world_dir)
    records = [r for r in loaded.records if r.choices]
    if not records:
        bad = f" ({len(loaded.bad_rows)} rows could not be read, e.g. {loaded.bad_rows[0]})" if loaded.bad_rows else ""
        raise PseudoCoTError(f"benchmark {name} has no multiple-choice items in its {split} split{bad}.")
    return records[:limit] if limit else records


def reference(record: Record) -> tuple[str, str]:
    """The text BLEU and ROUGE-L compare an output with, and its kind (``explanation`` or ``gold option``)."""
    if record.reasoning:
        return record.reasoning, "explanation"
    return record.answer_text, "gold option"
