import json
import subprocess
import sys
import time

import pytest

from pseudocot import stage
from pseudocot.errors import PseudoCoTError
from pseudocot.stage import manifest_hash, run_stage, stage_key


def _writer(calls, value="x"):
    def work(out):
        calls.append(out)
        (out / "artifact.txt").write_text(value)
        return {"n": len(calls)}

    return work


def test_writes_artifacts_config_and_manifest(tmp_path):
    calls = []
    res = run_stage("demo", tmp_path / "out", {"lr": 1}, [], _writer(calls))
    assert not res.skipped and sorted(p.name for p in res.out_dir.iterdir()) == [
        "artifact.txt",
        "config.yaml",
        "manifest.json",
    ]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["stage"] == "demo" and manifest["metrics"] == {"n": 1}
    assert {"config_hash", "input_hashes", "packages", "wall_time_s"} <= manifest.keys()
    assert "torch" in manifest["packages"]
    assert not (tmp_path / "out.partial").exists()


def test_up_to_date_is_skipped_and_force_or_changes_rerun(tmp_path):
    calls = []
    run_stage("demo", tmp_path / "out", {"lr": 1}, [], _writer(calls))
    assert run_stage("demo", tmp_path / "out", {"lr": 1}, [], _writer(calls)).skipped
    assert not run_stage("demo", tmp_path / "out", {"lr": 1}, [], _writer(calls), force=True).skipped
    assert not run_stage("demo", tmp_path / "out", {"lr": 2}, [], _writer(calls)).skipped
    assert len(calls) == 3


def test_input_change_reruns_downstream(tmp_path):
    calls = []
    up = run_stage("up", tmp_path / "up", {"a": 1}, [], _writer([])).out_dir
    run_stage("down", tmp_path / "down", {}, [up], _writer(calls))
    assert run_stage("down", tmp_path / "down", {}, [up], _writer(calls)).skipped
    run_stage("up", tmp_path / "up", {"a": 2}, [], _writer([]))
    assert not run_stage("down", tmp_path / "down", {}, [up], _writer(calls)).skipped


def test_interrupted_stage_leaves_nothing_that_looks_finished(tmp_path):
    run_stage("demo", tmp_path / "out", {"lr": 1}, [], _writer([], "old"))

    def crash(out):
        (out / "artifact.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stage("demo", tmp_path / "out", {"lr": 2}, [], crash)
    # The finished output of the earlier config is untouched; the partial one has no manifest.
    assert (tmp_path / "out" / "artifact.txt").read_text() == "old"
    assert not (tmp_path / "out.partial" / "manifest.json").exists()


def test_partial_directory_is_kept_for_resume_only_with_the_same_key(tmp_path):
    seen = []

    def crash(out):
        (out / "checkpoint").write_text("step 5")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stage("t", tmp_path / "out", {"lr": 1}, [], crash)
    run_stage("t", tmp_path / "out", {"lr": 1}, [], lambda out: seen.append((out / "checkpoint").exists()))
    with pytest.raises(KeyboardInterrupt):
        run_stage("t", tmp_path / "o2", {"lr": 1}, [], crash)
    run_stage("t", tmp_path / "o2", {"lr": 9}, [], lambda out: seen.append((out / "checkpoint").exists()))
    assert seen == [True, False]


def test_manifest_hash_requires_a_finished_stage(tmp_path):
    with pytest.raises(PseudoCoTError, match="is not a finished stage output"):
        manifest_hash(tmp_path)


def test_moving_the_run_directory_keeps_stages_up_to_date(tmp_path):
    up = run_stage("up", tmp_path / "a" / "up", {"a": 1}, [], _writer([])).out_dir
    run_stage("down", tmp_path / "a" / "down", {}, [up], _writer([]))
    (tmp_path / "a").rename(tmp_path / "b")
    moved = tmp_path / "b"
    assert run_stage("down", moved / "down", {}, [moved / "up"], _writer([])).skipped


def test_killed_after_the_manifest_is_promoted_not_redone(tmp_path):
    calls = []
    run_stage("demo", tmp_path / "out", {"lr": 1}, [], _writer(calls))
    (tmp_path / "out").rename(tmp_path / "out.partial")  # as if killed just before the rename
    res = run_stage("demo", tmp_path / "out", {"lr": 1}, [], _writer(calls))
    assert res.skipped and len(calls) == 1
    assert (tmp_path / "out" / "artifact.txt").is_file() and not (tmp_path / "out.partial").exists()


def test_user_file_contents_key_the_output(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("a")
    calls = []
    run_stage("data", tmp_path / "out", {}, [], _writer(calls), files=[data])
    assert run_stage("data", tmp_path / "out", {}, [], _writer(calls), files=[data]).skipped
    data.write_text("b")
    assert not run_stage("data", tmp_path / "out", {}, [], _writer(calls), files=[data]).skipped


def _crash_after_checkpoint(out):
    (out / "checkpoints").mkdir(exist_ok=True)
    (out / "checkpoints" / "step-5").write_text("5")
    raise KeyboardInterrupt


def test_a_killed_forced_run_is_resumed_by_force_and_discarded_by_restart(tmp_path):
    run_stage("t", tmp_path / "out", {"lr": 1}, [], _writer([]))
    with pytest.raises(KeyboardInterrupt):
        run_stage("t", tmp_path / "out", {"lr": 1}, [], _crash_after_checkpoint, force=True)
    seen = []
    resumed = run_stage("t", tmp_path / "out", {"lr": 1}, [], lambda out: seen.append(sorted(out.rglob("step-*"))))
    assert resumed.skipped and "--force resumes it" in resumed.note  # up to date: the checkpoints wait
    run_stage("t", tmp_path / "out", {"lr": 1}, [], lambda out: seen.append(sorted(out.rglob("step-*"))), force=True)
    assert [p.name for p in seen[0]] == ["step-5"]
    with pytest.raises(KeyboardInterrupt):
        run_stage("t", tmp_path / "out", {"lr": 1}, [], _crash_after_checkpoint, force=True)
    run_stage("t", tmp_path / "out", {"lr": 1}, [], lambda out: seen.append(sorted(out.rglob("step-*"))), restart=True)
    assert seen[1] == [] and not (tmp_path / "out.partial").exists()


def test_up_to_date_stage_removes_a_partial_of_another_configuration(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_stage("t", tmp_path / "out", {"lr": 2}, [], _crash_after_checkpoint)
    run_stage("t", tmp_path / "out", {"lr": 1}, [], _writer([]))
    assert not (tmp_path / "out.partial").exists()  # the lr=1 run could not use lr=2's checkpoints
    with pytest.raises(KeyboardInterrupt):
        run_stage("t", tmp_path / "out", {"lr": 2}, [], _crash_after_checkpoint)
    result = run_stage("t", tmp_path / "out", {"lr": 1}, [], _writer([]))
    assert result.skipped and result.note.startswith("removed") and not (tmp_path / "out.partial").exists()


def test_a_refused_run_leaves_nothing_behind(tmp_path):
    def refuse(out):
        raise PseudoCoTError("the tokenizers differ; use models that share a tokenizer.")

    with pytest.raises(PseudoCoTError, match="tokenizers differ"):
        run_stage("distill", tmp_path / "mid", {}, [], refuse)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # What a killed run left is still there after a refusal: a later run can resume it.
    with pytest.raises(KeyboardInterrupt):
        run_stage("distill", tmp_path / "mid", {}, [], _crash_after_checkpoint)
    with pytest.raises(PseudoCoTError):
        run_stage("distill", tmp_path / "mid", {}, [], refuse)
    assert (tmp_path / "mid.partial" / "checkpoints" / "step-5").is_file()


def test_a_second_run_of_a_stage_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "out"
    script = (
        "import sys, time\nfrom pathlib import Path\nfrom pseudocot.stage import run_stage\n"
        "def work(out):\n    (out / 'started').write_text('')\n"
        "    while not (out.parent / 'release').exists():\n        time.sleep(0.01)\n"
        "run_stage('t', Path(sys.argv[1]), {}, [], work)\n"
    )
    first = subprocess.Popen([sys.executable, "-c", script, str(out)])
    try:
        deadline = time.time() + 60
        while not (tmp_path / "out.partial" / "started").exists() and time.time() < deadline:
            time.sleep(0.01)
        with pytest.raises(PseudoCoTError, match=rf"another pseudocot run \(pid {first.pid}\) is writing .*out"):
            run_stage("t", out, {}, [], _writer([]), force=True)
        assert (tmp_path / "out.partial" / "started").is_file()  # the refused run touched nothing
    finally:
        (tmp_path / "release").write_text("")
        assert first.wait(timeout=60) == 0
    assert run_stage("t", out, {}, [], _writer([])).skipped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "release"]  # the lock went with its run


def test_a_local_directory_input_is_keyed_by_its_content(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"a" * 3 * 2**20)
    calls = []
    run_stage("eval", tmp_path / "eval", {}, [model], _writer(calls))
    assert run_stage("eval", tmp_path / "eval", {}, [model], _writer(calls)).skipped
    (model / "config.json").write_text('{"layers": 2}')  # the model replaced in place
    assert not run_stage("eval", tmp_path / "eval", {}, [model], _writer(calls)).skipped
    # Weights over the whole-file limit count by size, time and their first and last MiB.
    monkeypatch.setattr(stage, "_WHOLE_FILE_BYTES", 2**20)
    before = stage.directory_hash(model)
    assert stage.directory_hash(model) == before
    (model / "model.safetensors").write_bytes(b"a" * 3 * 2**20)  # rewritten: same bytes, new time
    assert stage.directory_hash(model) != before
    assert stage.input_hash(tmp_path / "eval") == manifest_hash(tmp_path / "eval")


def test_a_damaged_input_manifest_is_one_sentence(tmp_path):
    up = run_stage("router", tmp_path / "system", {}, [], _writer([])).out_dir
    (up / "manifest.json").write_text('{"stage": "router", "config_')
    with pytest.raises(
        PseudoCoTError, match=r"system/manifest.json is damaged \(not JSON\); delete .*system and rerun"
    ):
        run_stage("answer", tmp_path / "answers", {}, [up], _writer([]))
    # Its own damaged manifest does not stop a stage: the output is rewritten like an outdated one.
    assert not run_stage("router", up, {}, [], _writer([])).skipped


def test_a_zoo_model_is_keyed_on_its_own_corpus_and_the_tokenizer_only(tmp_path):
    from pseudocot.config import load_config
    from pseudocot.graph import Run
    from pseudocot.runners import zoo_inputs

    run = Run(load_config("configs/tiny.yaml", [f"run_dir={tmp_path}"]))
    (run.world_dir / "corpus").mkdir(parents=True)
    (run.world_dir / "tokenizer").mkdir()
    (run.world_dir / "tokenizer" / "tokenizer.json").write_text("{}")
    for role in ("base", "teacher"):
        (run.world_dir / "corpus" / f"{role}.jsonl").write_text(f'{{"text": "{role}", "masked": []}}\n')

    def keys():
        return {name: stage_key("zoo", {}, zoo_inputs(run, name)) for name in ("tiny-8b", "tiny-3b")}

    before = keys()
    (run.world_dir / "corpus" / "base.jsonl").write_text('{"text": "changed", "masked": []}\n')
    after = keys()
    assert after["tiny-8b"] == before["tiny-8b"]  # the teacher's model never read the base corpus
    assert after["tiny-3b"] != before["tiny-3b"]
    (run.world_dir / "tokenizer" / "tokenizer.json").write_text('{"v": 2}')
    assert keys()["tiny-8b"] != after["tiny-8b"]
