"""The data stage on user files: reruns when a file changes, refuses to finish with no data."""

import yaml
from typer.testing import CliRunner

from pseudocot.cli import app


def _config(tmp_path, csv_text):
    data = tmp_path / "train.csv"
    data.write_text(csv_text)
    cfg = {
        "run_dir": str(tmp_path / "run"),
        "world": {"train_per_level": 5, "validation_per_level": 2, "test_per_level": 2, "corpus_documents": 10},
        "data": {"sources": [{"name": "mine", "kind": "csv", "path": str(data)}], "splits": ["train"]},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, data


def test_edited_source_file_reruns_the_stage(tmp_path):
    config, data = _config(tmp_path, "question,A,B,answer\nQ1,x,y,A\n")
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(config)]).exit_code == 0
    assert "skipped" in runner.invoke(app, ["data", str(config)]).output
    data.write_text("question,A,B,answer\nQ1,x,y,A\nQ2,x,y,B\n")
    result = runner.invoke(app, ["data", str(config)])
    assert "skipped" not in result.output
    assert len((tmp_path / "run" / "data" / "train.jsonl").read_text().splitlines()) == 2


def test_a_split_of_only_bad_rows_is_an_error_not_an_empty_output(tmp_path):
    config, _ = _config(tmp_path, "question,A,B,answer\nQ1,x,y,Z\nQ2,x,y,Q\n")
    runner = CliRunner()
    assert runner.invoke(app, ["world", "build", str(config)]).exit_code == 0
    result = runner.invoke(app, ["data", str(config)])
    assert result.exit_code == 1
    assert "every row of the train split was bad (2 rows" in result.output
    assert not (tmp_path / "run" / "data").exists()
