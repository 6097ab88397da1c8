"""The synth stages on the micro run: traces (files, acceptance, resume, a teacher fine-tune on them)
and document Q&A through the command."""

import json
import shutil

import yaml
from typer.testing import CliRunner

from pseudocot.cli import app
from pseudocot.config import load_config
from pseudocot.pipeline import Pipeline
from pseudocot.records import read_jsonl
from pseudocot.synth.traces import reaches_gold, synthesize_traces


def test_traces_stage_keeps_exactly_the_traces_that_reach_the_gold_answer(micro_run):
    config, run, output = micro_run
    out = run / "synth" / "traces"
    cfg = load_config(config).synth.traces
    questions = list(read_jsonl(run / "data" / "train.jsonl"))[: cfg.questions]
    logged = {json.loads(line)["key"]: json.loads(line)["samples"] for line in (out / "progress.jsonl").open()}
    samples = {q.id: logged[f"{q.source}/{q.id}"] for q in questions}
    assert len(logged) == len(questions) and all(len(s) == cfg.samples for s in samples.values())
    kept = list(read_jsonl(out / "traces.jsonl"))
    expected = [
        (q.id, t) for q in questions for t in dict.fromkeys(samples[q.id]) if t.strip() and reaches_gold(t, q)[0]
    ]
    assert [(r.id.rsplit("-t", 1)[0], r.reasoning) for r in kept] == expected
    accepted = sum(reaches_gold(t, q)[0] for q in questions for t in samples[q.id])
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    assert metrics["acceptance_rate_all"] == round(accepted / (len(questions) * cfg.samples), 4)
    rows = (out / "reasoning_train.jsonl").read_text().splitlines()
    assert len(rows) == len(kept) and all(json.loads(r)["completion"].endswith("<|eot_id|>") for r in rows)
    assert "samples reached the gold answer" in output


def test_a_killed_traces_run_resumes_to_the_same_traces(micro_run, tmp_path):
    config, run, _ = micro_run
    cfg = load_config(config)
    pipe = Pipeline(cfg)
    traces = cfg.synth.traces
    records = list(read_jsonl(run / "data" / "train.jsonl"))[: traces.questions]
    model = pipe.resolve_model(traces.model)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    whole.mkdir()
    resumed.mkdir()
    first = synthesize_traces(traces, cfg.protocol, model, records, run / "data", whole)
    lines = (whole / "progress.jsonl").read_text().splitlines()
    # Killed while writing the second batch: one whole batch logged, and a line cut short.
    (resumed / "progress.jsonl").write_text("\n".join(lines[: traces.batch_size]) + "\n" + lines[-1][:10])
    again = synthesize_traces(traces, cfg.protocol, model, records, run / "data", resumed)
    assert first["generated_questions"] == len(records)
    assert again["generated_questions"] == len(records) - traces.batch_size
    assert (resumed / "traces.jsonl").read_text() == (whole / "traces.jsonl").read_text()
    assert (resumed / "acceptance.jsonl").read_text() == (whole / "acceptance.jsonl").read_text()


def test_a_teacher_fine_tune_on_traces_and_the_circular_setting_refused(micro_run, tmp_path):
    config, run, _ = micro_run
    data = yaml.safe_load(config.read_text())
    # Traces from the zoo teacher can feed the teacher's own fine-tune: synth runs before finetune.
    data["synth"]["traces"]["model"] = "zoo:tiny-8b"
    data["finetune"]["teacher"]["reasoning"] = "both"
    data["run_dir"] = str(tmp_path / "run")
    shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns("finetune", "synth", "distill", "system"))
    path = tmp_path / "both.yaml"
    path.write_text(yaml.safe_dump(data))
    stages = Pipeline(load_config(path)).stages()
    assert stages.index("synth") < stages.index("finetune")
    result = CliRunner().invoke(app, ["run", str(path), "--only", "synth"])
    assert result.exit_code == 0, result.output
    # Untrained micro models rarely reach the gold answer; three gold rows stand in for accepted traces.
    gold = (run / "data" / "reasoning_train.jsonl").read_text().splitlines()
    traces = tmp_path / "run" / "synth" / "traces" / "reasoning_train.jsonl"
    kept = len(traces.read_text().splitlines())
    traces.write_text(traces.read_text() + "\n".join(gold[:3]) + "\n")
    result = CliRunner().invoke(app, ["run", str(path), "--only", "finetune"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "finetune" / "teacher" / "manifest.json").read_text())
    assert manifest["metrics"]["reasoning"] == "both" and manifest["metrics"]["examples"] == len(gold) + kept + 3
    circular = CliRunner().invoke(app, ["run", str(config), "finetune.teacher.reasoning=traces"])
    assert circular.exit_code == 2 and "cannot also feed the teacher" in circular.output


def test_document_qa_through_the_command(micro_run, tmp_path):
    _, run, _ = micro_run
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "guide.md").write_text("# Guide\n\n" + "The device restarts when the light is red. " * 30)
    cfg = {
        "run_dir": str(tmp_path / "run"),
        "synth": {
            "qa": {
                "model": str(run / "zoo" / "tiny-3b"),
                "documents": str(docs),
                "chunk_tokens": 64,
                "chunk_overlap": 16,
                "generation": {"max_new_tokens": 16},
            }
        },
    }
    path = tmp_path / "qa.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["synth", "qa", str(path)])
    assert result.exit_code == 0, result.output  # a tiny model writes no usable pairs: counted, not a crash
    metrics = json.loads((tmp_path / "run" / "synth" / "qa" / "manifest.json").read_text())["metrics"]
    assert metrics["documents"] == 1 and metrics["chunks"] > 1
    logged = (tmp_path / "run" / "synth" / "qa" / "progress.jsonl").read_text().splitlines()
    assert len(logged) == metrics["chunks"]
    (docs / "guide.md").unlink()
    empty = CliRunner().invoke(app, ["synth", "qa", str(path)])
    assert empty.exit_code == 1 and "add some documents" in empty.output
