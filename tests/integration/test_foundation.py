"""Seeded micro runs of the foundation stages through the CLI: files, manifests, reload, skip."""

import json
import sys

from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from pseudocot.cli import app

from .helpers import copy_run, kill_after_first_checkpoint, micro_config


def test_run_writes_every_stage_with_its_contract(micro_run):
    _, run, _ = micro_run
    assert sorted(p.name for p in run.iterdir()) == [
        "answers",
        "cache",
        "data",
        "distill",
        "eval",
        "finetune",
        "probe",
        "synth",
        "system",
        "world",
        "zoo",
    ]
    stage_dirs = [run / "world", run / "data", run / "probe"]
    stage_dirs += [*(run / "zoo").iterdir(), *(run / "finetune").iterdir(), *(run / "distill").iterdir()]
    stage_dirs += [run / "system", run / "answers" / "test", run / "eval", run / "synth" / "traces"]
    for stage_dir in stage_dirs:
        manifest = json.loads((stage_dir / "manifest.json").read_text())
        assert {"stage", "config_hash", "input_hashes", "packages", "metrics", "wall_time_s"} <= manifest.keys()
        assert (stage_dir / "config.yaml").is_file()
    assert not list(run.rglob("*.partial"))
    world = sorted(p.name for p in (run / "world").iterdir())
    assert world == [
        "config.yaml",
        "corpus",
        "manifest.json",
        "test.jsonl",
        "tokenizer",
        "train.jsonl",
        "validation.jsonl",
    ]
    assert sorted(p.name for p in (run / "world" / "corpus").iterdir()) == ["base.jsonl", "teacher.jsonl"]
    data = sorted(p.name for p in (run / "data").iterdir())
    assert data == sorted(
        ["config.yaml", "manifest.json", "tokenizer"]
        + [f"{k}{s}.jsonl" for k in ("", "answer_", "reasoning_") for s in ("train", "validation", "test")]
    )


def test_zoo_model_is_a_plain_hub_style_checkpoint(micro_run):
    _, run, _ = micro_run
    model_dir = run / "zoo" / "tiny-8b"
    names = {p.name for p in model_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    } <= names
    assert "checkpoints" not in names
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tokenizer.chat_template and tokenizer.bos_token == "<|begin_of_text|>"
    ids = tokenizer("Start with 3.", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 5 or out[0, -1] == tokenizer.eos_token_id
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["metrics"]["parameters"] == model.num_parameters()


def test_probe_reports_every_condition_for_every_model(micro_run):
    _, run, output = micro_run
    results = json.loads((run / "probe" / "results.json").read_text())
    assert set(results) == {"tiny-8b", "tiny-3b"}
    for acc in results.values():
        for condition in ("direct", "gold", "wrong_step", "own_cot"):
            for group in ("easy", "hard", "tiny_math/1", "tiny_cs/4"):
                assert 0.0 <= acc[f"{condition}/{group}"] <= 1.0
    assert "Zoo probe" in output


def test_data_stage_is_stratified_and_chat_formatted(micro_run):
    _, run, _ = micro_run
    records = [json.loads(line) for line in (run / "data" / "train.jsonl").read_text().splitlines()]
    assert {r["source"] for r in records} == {"tiny_math", "tiny_cs"}
    half = [r["source"] for r in records[: len(records) // 2]]
    assert abs(half.count("tiny_math") - half.count("tiny_cs")) <= 1
    example = json.loads((run / "data" / "answer_train.jsonl").read_text().splitlines()[0])
    assert example["prompt"].startswith("<|begin_of_text|><|start_header_id|>system")
    assert example["completion"].startswith("The answer is ") and example["completion"].endswith("<|eot_id|>")


def test_second_run_skips_everything(micro_run, tmp_path):
    config, shared, _ = micro_run
    run = copy_run(shared, tmp_path / "run")  # a run takes each stage's lock, even to skip it
    before = (run / "zoo" / "tiny-8b" / "manifest.json").read_text()
    result = CliRunner().invoke(app, ["run", str(config), f"run_dir={run}"])
    assert result.exit_code == 0
    # world, 2 zoo models, data, probe, 2 fine-tunes, traces, 2 hops, router, answer, eval
    assert result.output.count("skipped") == 13
    assert (run / "zoo" / "tiny-8b" / "manifest.json").read_text() == before


def test_a_killed_zoo_build_resumes_from_its_checkpoint(tmp_path):
    config = micro_config(tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["world", "build", str(config)]).exit_code == 0
    overrides = ["zoo.models.tiny-8b.max_steps=200", "zoo.save_steps=3"]
    # Build in a subprocess and kill it as soon as a checkpoint exists.
    checkpoints = tmp_path / "run" / "zoo" / "tiny-8b.partial" / "checkpoints"
    kill_after_first_checkpoint(
        [sys.executable, "-m", "pseudocot", "zoo", "build", str(config), *overrides], checkpoints
    )
    assert not (tmp_path / "run" / "zoo" / "tiny-8b" / "manifest.json").exists()
    assert list(checkpoints.glob("checkpoint-*")), "no checkpoint was written before the kill"

    result = runner.invoke(app, ["zoo", "build", str(config), *overrides])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "zoo" / "tiny-8b" / "manifest.json").read_text())
    assert manifest["metrics"]["resumed_from"] is not None
    assert not checkpoints.exists()


def test_a_shipped_zoo_snapshot_is_used_only_for_its_own_key_and_checked_by_hash(micro_run, tmp_path):
    config, run, _ = micro_run
    snapshot = tmp_path / "snapshot"
    runner = CliRunner()
    result = runner.invoke(app, ["zoo", "snapshot", str(config), f"zoo.snapshot={snapshot}"])
    assert result.exit_code == 0, result.output
    assert json.loads((snapshot / "tiny-3b" / "snapshot.json").read_text())["sha256"]["model.safetensors"]

    fresh = [f"run_dir={tmp_path / 'fresh'}", f"zoo.snapshot={snapshot}"]
    assert runner.invoke(app, ["world", "build", str(config), *fresh]).exit_code == 0
    result = runner.invoke(app, ["zoo", "build", str(config), *fresh])
    assert result.exit_code == 0, result.output
    for name in ("tiny-3b", "tiny-8b"):
        copied = tmp_path / "fresh" / "zoo" / name
        assert (copied / "model.safetensors").read_bytes() == (run / "zoo" / name / "model.safetensors").read_bytes()
        manifest = json.loads((copied / "manifest.json").read_text())
        assert manifest["metrics"]["snapshot"] == str(snapshot / name)
        # Downstream stages see the same key as the model built here.
        original = json.loads((run / "zoo" / name / "manifest.json").read_text())
        assert {k: manifest[k] for k in ("config_hash", "input_hashes")} == {
            k: original[k] for k in ("config_hash", "input_hashes")
        }

    # Another config is not served from the snapshot: the model is pretrained.
    other = [f"run_dir={tmp_path / 'other'}", f"zoo.snapshot={snapshot}", "zoo.models.tiny-3b.max_steps=3"]
    assert runner.invoke(app, ["world", "build", str(config), *other]).exit_code == 0
    result = runner.invoke(app, ["zoo", "build", str(config), *other])
    output = result.output.replace("\n", " ")
    assert result.exit_code == 0 and "was not built for this config, corpus and tokenizer" in output
    assert (
        "snapshot" not in json.loads((tmp_path / "other" / "zoo" / "tiny-3b" / "manifest.json").read_text())["metrics"]
    )

    # A damaged file is named, and nothing is left that looks finished.
    weights = snapshot / "tiny-8b" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    damaged = [f"run_dir={tmp_path / 'damaged'}", f"zoo.snapshot={snapshot}"]
    assert runner.invoke(app, ["world", "build", str(config), *damaged]).exit_code == 0
    result = runner.invoke(app, ["zoo", "build", str(config), *damaged])
    assert result.exit_code != 0 and "does not match the hash" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "damaged" / "zoo" / "tiny-8b" / "manifest.json").exists()
