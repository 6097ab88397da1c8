import json

import pytest

from pseudocot.stage import manifest_hash, run_stage


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
    from pseudocot.errors import PseudoCoTError

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
