"""A model given as a directory of one's own is keyed by its content: replacing it reruns the stages and
evaluation rows that used it, where its unchanged path alone would have kept the old results."""

import json
import shutil

import yaml
from typer.testing import CliRunner

from pseudocot.cli import app

from .helpers import micro_config


def test_replacing_a_model_directory_reruns_its_evaluation(tmp_path):
    config = micro_config(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["zoo"]["models"]["tiny-3b"].update(hidden_size=16, intermediate_size=32)  # a model of another size
    mine = tmp_path / "mine"
    cfg["eval"].update(
        systems=[{"name": "mine", "kind": "plain", "model": str(mine)}], peers=[], limit=3, baseline="mine"
    )
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run = tmp_path / "run"
    runner = CliRunner()
    for command in (["world", "build"], ["zoo", "build"]):
        assert runner.invoke(app, [*command, str(config)]).exit_code == 0

    def evaluate(model: str) -> tuple[str, int]:
        if model:
            shutil.rmtree(mine, ignore_errors=True)
            shutil.copytree(run / "zoo" / model, mine, ignore=shutil.ignore_patterns("manifest.json", "config.yaml"))
        result = runner.invoke(app, ["eval", str(config)])
        assert result.exit_code == 0, result.output
        systems = json.loads((run / "eval" / "results.json").read_text())["systems"]
        return " ".join(result.output.split()), systems[0]["parameters"]

    first, big = evaluate("tiny-8b")
    again, _ = evaluate("")
    replaced, small = evaluate("tiny-3b")
    assert "eval: done" in first and "eval: up to date" in again
    assert "eval: done" in replaced and "kept from an earlier run" not in replaced
    assert small < big
