"""The evaluation stage on the micro run, and the MMLU code path with tiny local models."""

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sacrebleu
import yaml
from rouge_score import rouge_scorer
from typer.testing import CliRunner

from pseudocot.cli import app
from pseudocot.config import load_config
from pseudocot.eval.benchmarks import load_benchmark
from pseudocot.infer.choice import extract_choice
from pseudocot.infer.system import PseudoCoT
from pseudocot.pipeline import Pipeline
from pseudocot.records import read_jsonl

from .helpers import copy_run

ROOT = Path(__file__).resolve().parents[2]


def _results(run: Path) -> dict:
    return json.loads((run / "eval" / "results.json").read_text())


def test_report_files_and_every_paper_row(micro_run):
    config, run, output = micro_run
    names = {p.name for p in (run / "eval").iterdir()}
    assert {"report.md", "results.csv", "results.json", "accuracy.png", "params_vs_accuracy.png"} <= names
    assert "accuracy_vs_flops.png" in names
    for png in ("accuracy.png", "params_vs_accuracy.png", "accuracy_vs_flops.png"):
        assert (run / "eval" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = _results(run)
    systems = [s["name"] for s in data["systems"]]
    expected = [s.name for s in Pipeline(load_config(config)).eval_systems()]
    assert systems == expected
    assert {"base", "base + pseudo-CoT", "fine-tuned base", "fine-tuned base + pseudo-CoT"} <= set(systems)
    test_items = len(list(read_jsonl(run / "world" / "test.jsonl")))
    assert len(data["items"]) == len(systems) * test_items
    params = {s["name"]: s["parameters"] for s in data["systems"]}
    # A pseudo-CoT system counts its TTM's parameters; its base alone is the plain row.
    assert params["fine-tuned base + pseudo-CoT"] > params["fine-tuned base"]
    assert "Evaluation (paper Table 5.1)" in output


def test_every_figure_recomputes_from_the_per_item_outputs(micro_run):
    _, run, _ = micro_run
    data = _results(run)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    baseline = data["summary"][0]["system"]
    for row in data["summary"]:
        items = [i for i in data["items"] if i["system"] == row["system"] and i["benchmark"] == row["benchmark"]]
        assert row["items"] == len(items) > 0
        for item in items:
            assert item["correct"] == (item["pick"] == item["gold"])
        assert row["accuracy"] == pytest.approx(np.mean([i["correct"] for i in items]))
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"]
        assert row["unanswered"] == sum(i["pick"] is None for i in items)
        outputs, refs = [i["output"] for i in items], [i["reference"] for i in items]
        assert row["bleu"] == pytest.approx(sacrebleu.corpus_bleu(outputs, [refs]).score / 100)
        rouge = np.mean([scorer.score(r, o)["rougeL"].fmeasure for o, r in zip(outputs, refs, strict=True)])
        assert row["rouge_l"] == pytest.approx(rouge)
        assert row["flops"] == pytest.approx(np.mean([i["flops"] for i in items]))
        base = {
            i["id"]: i["correct"]
            for i in data["items"]
            if i["system"] == baseline and i["benchmark"] == row["benchmark"]
        }
        assert row["system_only"] == sum(i["correct"] and not base[i["id"]] for i in items)
        assert row["baseline_only"] == sum(base[i["id"]] and not i["correct"] for i in items)
    # Thoughts are part of a pseudo-CoT system's output; the tiny world's reference is the explanation.
    thought = next(i for i in data["items"] if i["thoughts"])
    assert thought["output"].startswith(thought["thoughts"][0]) and thought["reference_kind"] == "explanation"


def test_report_table_csv_and_json_agree(micro_run):
    _, run, _ = micro_run
    data = _results(run)
    report = (run / "eval" / "report.md").read_text()
    table = [line.split(" | ") for line in report.splitlines() if line.startswith("| ")]
    header, rows = table[0], {r[0].removeprefix("| "): r for r in table[1 : 1 + len(data["systems"])]}
    for row in data["summary"]:
        cells = rows[row["system"]]
        column = header.index(f"{row['benchmark']} acc")
        assert cells[column] == f"{row['accuracy']:.1%}"
        assert cells[column + 1] == f"{row['bleu']:.3f}" and cells[column + 2].rstrip(" |") == f"{row['rouge_l']:.3f}"
    with open(run / "eval" / "results.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(data["summary"])
    for got, want in zip(csv_rows, data["summary"], strict=True):
        assert got["system"] == want["system"] and float(got["accuracy"]) == pytest.approx(want["accuracy"])
        assert int(got["system_only"]) == want["system_only"]


def test_bad_benchmark_name_is_one_sentence(micro_run):
    config, _, _ = micro_run
    result = CliRunner().invoke(app, ["eval", str(config), "eval.benchmarks=[mmlu]"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    (line,) = result.stderr.strip().splitlines()  # one sentence: no traceback, no usage box
    assert "unknown benchmark 'mmlu'; use tiny:math, tiny:cs or mmlu:SUBJECT" in line


def _mmlu_layouts(records, root: Path, subject: str) -> tuple[Path, Path]:
    """The records written as an MMLU subject's test split in both layouts."""
    csv_dir = root / "csv" / "data" / "test"
    csv_dir.mkdir(parents=True, exist_ok=True)
    with open(csv_dir / f"{subject}_test.csv", "w", newline="") as f:
        csv.writer(f).writerows([[r.question, *r.choices, r.answer] for r in records])
    (root / "pq" / subject).mkdir(parents=True)
    table = {
        "question": [r.question for r in records],
        "subject": [subject] * len(records),
        "choices": [r.choices for r in records],
        "answer": [r.answer_index for r in records],
    }
    pq.write_table(pa.table(table), root / "pq" / subject / "test-00000-of-00001.parquet")
    return root / "csv", root / "pq"


def test_mmlu_layouts_through_the_eval_command_with_tiny_local_models(micro_run, tmp_path):
    _, run, _ = micro_run
    records = list(read_jsonl(run / "world" / "test.jsonl"))[:12]
    csv_dir, pq_dir = _mmlu_layouts(records, tmp_path, "college_mathematics")
    a = load_benchmark("mmlu:college_mathematics", "test", str(csv_dir))
    b = load_benchmark("mmlu:college_mathematics", "test", str(pq_dir))
    assert a == b and [r.answer for r in a] == [r.answer for r in records]
    # An evaluation-only config (no data section): a local model answering in letters, generated.
    cfg = {
        "run_dir": str(tmp_path / "run"),
        "protocol": {"answer_style": "letter", "one_shot": True},
        "decoding": {"eval": {"max_new_tokens": 8}},
        "eval": {
            "benchmarks": ["mmlu:college_mathematics"],
            "mmlu_dir": str(pq_dir),
            "answer_mode": "generate",
            "systems": [
                {"name": "tiny-3b", "kind": "plain", "model": str(run / "zoo" / "tiny-3b")},
                {"name": "tiny-3b + own CoT", "kind": "cot", "model": str(run / "zoo" / "tiny-3b")},
            ],
        },
    }
    path = tmp_path / "mmlu.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["eval", str(path)])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert {i["reference_kind"] for i in data["items"]} == {"gold option"}
    for item in data["items"]:  # the pick is what extraction reads off the generated answer
        record = next(r for r in a if r.id == item["id"])
        index = extract_choice(item["answer"], record.choices)
        assert item["pick"] == (None if index is None else "ABCD"[index])
    # A benchmark added later runs alone: the first one's runs are kept (its files did not change).
    _mmlu_layouts(records[:6], tmp_path, "college_computer_science")
    both = "eval.benchmarks=[mmlu:college_mathematics,mmlu:college_computer_science]"
    result = CliRunner().invoke(app, ["eval", str(path), both])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert output.count("kept from an earlier run") == output.count("on mmlu:college_mathematics:") == 2
    after = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert [i for i in after["items"] if i["benchmark"] == "mmlu:college_mathematics"] == data["items"]
    assert sum(i["benchmark"] == "mmlu:college_computer_science" for i in after["items"]) == 2 * 6
    missing = CliRunner().invoke(app, ["eval", str(path), f"eval.mmlu_dir={tmp_path / 'nowhere'}"])
    assert missing.exit_code != 0 and "does not exist" in missing.output


def test_generate_mode_reads_the_option_off_the_written_answer(micro_run):
    _, run, _ = micro_run
    records = list(read_jsonl(run / "world" / "test.jsonl"))[:6]
    system = PseudoCoT.load(run / "system", answer_mode="generate")
    results = system.run(records, "always", max_thoughts=1)
    for record, result in zip(records, results, strict=True):
        assert len(result.answers) == 2 and result.usage["base"].generated > 0
        assert result.choices == [extract_choice(a, record.choices) for a in result.answers]


def test_paper_preset_derives_the_papers_rows_and_mmlu_config_is_eval_only():
    paper = Pipeline(load_config(ROOT / "configs" / "paper.yaml"))
    names = [s.name for s in paper.eval_systems()]
    assert names[:4] == ["base", "base + pseudo-CoT", "fine-tuned base", "fine-tuned base + pseudo-CoT"]
    assert names[4:] == ["mistralai/Mistral-7B-Instruct-v0.3", "google/gemma-2-9b-it"]
    mmlu = Pipeline(load_config(ROOT / "configs" / "mmlu.yaml"))
    assert list(mmlu.stages()) == ["eval"]


def test_an_interrupted_evaluation_keeps_its_finished_runs(micro_run, tmp_path, monkeypatch):
    from pseudocot.eval import harness

    config, run, _ = micro_run
    cfg = load_config(config)
    pipe = Pipeline(cfg)
    systems = pipe.eval_systems()[:2]
    benchmarks = {b: load_benchmark(b, "test", None, run / "world", 6) for b in ("tiny:math", "tiny:cs")}
    loads = []
    real_load = harness.load_system
    monkeypatch.setattr(harness, "load_system", lambda spec, *a: loads.append(spec.name) or real_load(spec, *a))
    context = {"split": "test", "limit": 6}

    def evaluate():
        args = (cfg.eval, cfg.protocol, cfg.decoding.eval, pipe.resolve_model, str(run / "system"), tmp_path, context)
        return harness.evaluate(systems, benchmarks, *args)

    first = evaluate()
    keys = {(s.name, b): harness.run_key(s, b, context) for s in systems for b in benchmarks}
    assert sorted(p.stem for p in tmp_path.iterdir()) == sorted(keys.values())
    (tmp_path / f"{keys[(systems[1].name, 'tiny:cs')]}.json").unlink()  # killed during the last run
    loads.clear()
    again = evaluate()
    assert loads == [systems[1].name]  # the first system is not loaded again
    assert again.items == first.items and again.systems == first.systems
    assert [r["benchmark"] for r in again.runs] == [r["benchmark"] for r in first.runs]
    assert harness.run_key(systems[0], "tiny:cs", context | {"limit": 7}) != keys[(systems[0].name, "tiny:cs")]
    # A damaged kept run (cut short, or JSON of another shape) is run again, not a traceback.
    kept = tmp_path / f"{keys[(systems[0].name, 'tiny:math')]}.json"
    kept.write_text(kept.read_text()[:40])
    (tmp_path / f"{keys[(systems[1].name, 'tiny:math')]}.json").write_text('{"system": {}, "run": {}, "items": null}')
    loads.clear()
    assert evaluate().items == first.items and loads == [s.name for s in systems]


def test_another_baseline_reuses_every_run(micro_run, tmp_path):
    config, shared, _ = micro_run
    run = copy_run(shared, tmp_path / "run")  # the evaluation is rewritten
    before = _results(run)
    result = CliRunner().invoke(app, ["eval", str(config), f"run_dir={run}", "eval.baseline=fine-tuned base"])
    assert result.exit_code == 0, result.output
    assert " ".join(result.output.split()).count("kept from an earlier run") == len(before["summary"])
    after = _results(run)
    assert after["items"] == before["items"]
    assert {r["baseline"] for r in after["summary"]} == {"fine-tuned base"}
