import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pseudocot.config import SourceConfig, load_config, to_data
from pseudocot.data.loaders import MAX_FIELD_CHARS, load_source, normalize_row
from pseudocot.errors import ConfigError, PseudoCoTError

MMLU_ROWS = [
    ["What is 1+1?", "1", "2", "3", "None", "B"],
    ['Which, with "quotes", holds?', "None", "all of them", "x, y", "0", "A"],
    ["Pick D", "a", "b", "c", "d", "D"],
]


def _mmlu_csv_dir(root, subject="college_mathematics", split="test"):
    (root / split).mkdir(parents=True)
    with open(root / split / f"{subject}_{split}.csv", "w", newline="") as f:
        csv.writer(f).writerows(MMLU_ROWS)
    return root


def _cais_parquet_dir(root, subject="college_mathematics", split="test"):
    (root / subject).mkdir(parents=True)
    table = pa.table(
        {
            "question": [r[0] for r in MMLU_ROWS],
            "subject": [subject] * len(MMLU_ROWS),
            "choices": [r[1:5] for r in MMLU_ROWS],
            "answer": ["ABCD".index(r[5]) for r in MMLU_ROWS],
        }
    )
    pq.write_table(table, root / subject / f"{split}-00000-of-00001.parquet")
    return root


def test_mmlu_csv_and_cais_parquet_give_identical_items(tmp_path):
    csv_src = SourceConfig(
        name="m", kind="mmlu_csv", path=str(_mmlu_csv_dir(tmp_path / "csv")), subject="college_mathematics"
    )
    pq_src = SourceConfig(
        name="m", kind="mmlu_parquet", path=str(_cais_parquet_dir(tmp_path / "pq")), subject="college_mathematics"
    )
    a, b = load_source(csv_src, "test"), load_source(pq_src, "test")
    assert a.bad_rows == b.bad_rows == []
    assert a.records == b.records
    assert [r.answer for r in a.records] == ["B", "A", "D"]
    assert a.records[0].choices[3] == "None"  # the string, not a missing value
    assert a.records[1].question == 'Which, with "quotes", holds?' and a.records[1].choices[2] == "x, y"
    assert a.records[0].subject == "college_mathematics"


def test_mmlu_train_split_maps_to_dev(tmp_path):
    src = SourceConfig(
        name="m", kind="mmlu_csv", path=str(_mmlu_csv_dir(tmp_path, split="dev")), subject="college_mathematics"
    )
    assert len(load_source(src, "train").records) == 3
    with pytest.raises(PseudoCoTError, match="no college_mathematics_test.csv under"):
        load_source(src, "test")


def test_jsonl_skips_bad_rows_with_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [
        {"question": "Q1", "choices": ["a", "b"], "answer": 1, "reasoning": "because"},
        "not json at all",
        {"question": "Q2", "choices": ["a", "b"], "answer": "C"},
        {"question": "Q3", "answer": "free text"},
        {"choices": ["a"], "answer": "A"},
    ]
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    loaded = load_source(SourceConfig(name="j", kind="jsonl", path=str(tmp_path / "{split}.jsonl")), "train")
    assert [r.question for r in loaded.records] == ["Q1", "Q3"]
    assert loaded.records[0].answer == "B" and loaded.records[0].reasoning == "because"
    assert loaded.records[1].choices == [] and loaded.records[1].answer == "free text"
    assert len(loaded.bad_rows) == 3
    assert loaded.bad_rows[0].startswith(f"{path}:2: not valid JSON")
    assert loaded.bad_rows[1].startswith(f"{path}:3:") and "'C' is not one of the option letters" in loaded.bad_rows[1]
    assert loaded.bad_rows[2].startswith(f"{path}:5:")


def test_csv_with_option_columns_and_a_short_row(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("question,A,B,C,D,answer\nQ1,None,2,3,4,A\nQ2,1,2\nQ3,x,y,z,w,3\n")
    loaded = load_source(SourceConfig(name="c", kind="csv", path=str(path)), "train")
    assert [r.answer for r in loaded.records] == ["A", "D"]
    assert loaded.records[0].choices == ["None", "2", "3", "4"]
    assert loaded.bad_rows == [f"{path}:3: expected 6 columns, found 3"]
    # Without {split} in the path, the file is the train split only.
    assert load_source(SourceConfig(name="c", kind="csv", path=str(path)), "test").records == []


def test_missing_files_are_one_sentence(tmp_path):
    with pytest.raises(PseudoCoTError, match="JSONL file .*nope.jsonl does not exist"):
        load_source(SourceConfig(name="j", kind="jsonl", path=str(tmp_path / "nope.jsonl")), "train")
    with pytest.raises(PseudoCoTError, match="MMLU directory .* does not exist"):
        load_source(SourceConfig(name="m", kind="mmlu_parquet", path=str(tmp_path / "x"), subject="s"), "test")


def test_hf_source_without_a_hub_is_a_clear_error():
    src = SourceConfig(name="h", kind="hf", path="cais/mmlu", subject="college_mathematics")
    with pytest.raises(PseudoCoTError, match="could not load split 'test' of dataset 'cais/mmlu'"):
        load_source(src, "test")


def test_tiny_source_reads_one_subject(world_dir):
    loaded = load_source(SourceConfig(name="math", kind="tiny", path="tiny_math"), "validation", world_dir)
    assert loaded.records and {r.subject for r in loaded.records} == {"tiny_math"}
    assert {r.source for r in loaded.records} == {"math"}


def test_normalize_row_accepts_json_choices_and_index_answers():
    r = normalize_row({"question": "q", "choices": '["a", "b", "c"]', "answer": "2"}, "s", "s-0")
    assert r.choices == ["a", "b", "c"] and r.answer == "C" and r.id == "s-0"
    with pytest.raises(ValueError, match="out of range"):
        normalize_row({"question": "q", "choices": ["a"], "answer": 3}, "s", "s-0")


def test_bom_non_utf8_gaps_and_non_list_choices(tmp_path):
    bom = tmp_path / "bom.csv"
    bom.write_bytes("question,A,B,answer\nQ1,x,y,B\n".encode("utf-8-sig"))
    assert [r.answer for r in load_source(SourceConfig(name="c", kind="csv", path=str(bom)), "train").records] == ["B"]
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"question": "caf\xe9", "answer": "x"}\n'.encode("latin-1"))
    with pytest.raises(PseudoCoTError, match="is not UTF-8 text; save it as UTF-8"):
        load_source(SourceConfig(name="j", kind="jsonl", path=str(latin)), "train")
    gap = tmp_path / "gap.csv"
    gap.write_text("question,A,B,C,D,answer\nQ1,x,y,,w,C\n")
    loaded = load_source(SourceConfig(name="c", kind="csv", path=str(gap)), "train")
    assert loaded.records == [] and "gap" in loaded.bad_rows[0]
    odd = tmp_path / "odd.jsonl"
    odd.write_text(
        '{"question": "q", "choices": 5, "answer": "A"}\n{"question": "q2", "choices": ["a"], "answer": "A"}\n'
    )
    loaded = load_source(SourceConfig(name="j", kind="jsonl", path=str(odd)), "train")
    assert len(loaded.records) == 1 and "must be a list" in loaded.bad_rows[0]


def test_only_lf_crlf_and_cr_end_a_line(tmp_path):
    # U+0085 (NEL) and U+2028 are line ends to str.splitlines but text inside a field here; MMLU has such rows.
    rows = [
        ["Functional structures help to create\x85...", "a", "b", "c", "d", "B"],
        ["x\u2028y", "1", "2", "3", "4", "A"],
    ]
    src = SourceConfig(name="m", kind="mmlu_csv", path=str(tmp_path), subject="management")
    for ending in ("\n", "\r\n", "\r"):
        with open(tmp_path / "management_test.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f, lineterminator=ending).writerows(rows)
        loaded = load_source(src, "test")
        assert loaded.bad_rows == []
        assert [r.question for r in loaded.records] == [rows[0][0], rows[1][0]]
    jsonl = tmp_path / "train.jsonl"
    records = [{"question": "one\u2028two", "answer": "x"}, {"question": "nel\x85here", "answer": "y"}]
    # A raw U+2028 is valid inside a JSON string; ensure_ascii=False writes it unescaped.
    jsonl.write_text("\r\n".join(json.dumps(r, ensure_ascii=False) for r in records), encoding="utf-8", newline="")
    loaded = load_source(SourceConfig(name="j", kind="jsonl", path=str(jsonl)), "train")
    assert loaded.bad_rows == [] and [r.question for r in loaded.records] == ["one\u2028two", "nel\x85here"]


def test_an_oversized_csv_field_is_a_bad_row_and_the_rows_after_it_read(tmp_path):
    path = tmp_path / "big.csv"
    past_csv_limit = "q" * 200_000  # over the csv module's default 131,072
    too_long = "w" * (MAX_FIELD_CHARS + 1)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(
            [["question", "A", "B", "answer"], [past_csv_limit, "x", "y", "A"], [f"{too_long}\nmore", "x", "y", "A"]]
            + [["after", "x", "y", "B"]]
        )
    loaded = load_source(SourceConfig(name="c", kind="csv", path=str(path)), "train")
    assert [r.question for r in loaded.records] == [past_csv_limit, "after"]
    assert loaded.bad_rows == [f"{path}:4: a field of 1,000,006 characters is over the 1,000,000 limit"]


# Rows shaped as the hub's reasoning datasets are: GSM8K (question, answer: worked solution ending "#### N"),
# MetaMathQA (query, response ending "The answer is: N", and more columns), AQuA-RAT (question, options
# lettered "A)..", rationale, correct).
HUB_ROWS = {
    "gsm8k": {
        "train": [
            {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
            {"question": "Half of 10?", "answer": "10 / 2 = 5\n#### 5"},
        ],
        "test": [{"question": "Twice 6?", "answer": "2 * 6 = 12\n#### 12"}],
    },
    "metamathqa": {
        "train": [
            {
                "type": "GSM_Rephrased",
                "query": "What is 3 more than 4?",
                "original_question": "x",
                "response": "4 + 3 = 7.\nThe answer is: 7",
            },
            {"type": "MATH_AnsAug", "query": "Simplify 2/4.", "original_question": "x", "response": "No answer."},
        ]
    },
    "aqua_rat": {
        "train": [
            {
                "question": "A train covers 60 km in 1.5 h. Its speed?",
                "options": ["A)30", "B)40", "C)45", "D)50", "E)90"],
                "rationale": "60 / 1.5 = 40.\nANSWER:B",
                "correct": "B",
            }
        ],
        "validation": [
            {
                "question": "2x = 8; x?",
                "options": ["A)2", "B)4", "C)6", "D)8", "E)16"],
                "rationale": "x = 4",
                "correct": "B",
            }
        ],
        "test": [
            {
                "question": "3x = 9; x?",
                "options": ["A)1", "B)2", "C)3", "D)4", "E)5"],
                "rationale": "x = 3",
                "correct": "C",
            }
        ],
    },
}


def _paper_source(name, tmp_path):
    """paper.yaml's source ``name``, reading a local copy of its dataset (a directory of split files)."""
    directory = tmp_path / name
    directory.mkdir()
    for split, rows in HUB_ROWS[name].items():
        (directory / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = next(s for s in load_config("configs/paper.yaml", []).data.sources if s.name == name)
    return source.model_copy(update={"path": str(directory), "hf_config": None})


def test_paper_reasoning_sources_read_worked_solutions_into_reasoning_and_answer(tmp_path):
    gsm8k = _paper_source("gsm8k", tmp_path)
    train = load_source(gsm8k, "train")
    first = train.records[0]
    assert (first.question, first.answer, first.choices) == ("Tom has 3 apples and buys 4. How many?", "7", [])
    assert first.reasoning == "3 + 4 = <<3+4=7>>7\nThe answer is 7."
    # Its test questions are the validation split (the router's own); it gives the data stage no test split.
    assert [r.answer for r in load_source(gsm8k, "validation").records] == ["12"]
    assert load_source(gsm8k, "test").records == []

    meta = load_source(_paper_source("metamathqa", tmp_path), "train")
    assert [(r.question, r.answer, r.reasoning) for r in meta.records] == [
        ("What is 3 more than 4?", "7", "4 + 3 = 7.\nThe answer is 7.")
    ]
    assert len(meta.bad_rows) == 1 and "states no final answer" in meta.bad_rows[0]  # "No answer." is skipped

    aqua = _paper_source("aqua_rat", tmp_path)
    item = load_source(aqua, "train").records[0]
    assert item.choices == ["30", "40", "45", "50", "90"] and item.answer == "B" and item.answer_text == "40"
    assert item.reasoning == "60 / 1.5 = 40.\nANSWER:B"
    assert [len(load_source(aqua, split).records) for split in ("validation", "test")] == [1, 1]


def test_field_mapping_and_final_answer_read_jsonl_too(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"problem": "1 + 1?", "solution": "1 + 1 = 2. Final: 2"}) + "\n")
    src = SourceConfig(
        name="s",
        kind="jsonl",
        path=str(path),
        fields={"question": "problem", "reasoning": "solution"},
        final_answer=r"Final:\s*(\S+)",
    )
    record = load_source(src, "train").records[0]
    assert (record.question, record.answer, record.reasoning) == ("1 + 1?", "2", "1 + 1 = 2.\nThe answer is 2.")


def test_a_final_answer_pattern_without_a_group_is_one_sentence(tmp_path):
    path = tmp_path / "c.yaml"
    source = {"name": "s", "kind": "jsonl", "path": "x.jsonl", "final_answer": "####"}
    path.write_text(json.dumps({"data": {"sources": [source], "tokenizer": "x"}}))
    with pytest.raises(ConfigError, match="final_answer needs a group around the answer"):
        load_config(str(path), [])


def test_sources_without_the_new_settings_keep_their_keys():
    # Unset, the mapping settings are left out of a source's data: configs written before them stay up to date.
    assert set(to_data(SourceConfig(name="s", kind="jsonl", path="x"))) == {
        "name",
        "kind",
        "path",
        "subject",
        "hf_config",
    }
