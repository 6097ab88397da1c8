import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from pseudocot import __version__
from pseudocot.cli import app
from pseudocot.config import load_config
from pseudocot.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_version_and_help():
    assert runner.invoke(app, ["--version"]).output.strip() == f"pseudocot {__version__}"
    out = runner.invoke(app, ["--help"]).output
    for command in ("run", "world", "zoo", "data", "config"):
        assert command in out
    zoo_help = runner.invoke(app, ["zoo", "build", "--help"]).output
    assert "zoo.block_size" in zoo_help and "Tokens per packed pretraining sequence" in zoo_help


def test_every_stage_has_a_subcommand():
    stages = Pipeline(load_config(ROOT / "configs" / "tiny.yaml")).stages()
    commands = {
        "world": ["world", "build"],
        "zoo": ["zoo", "build"],
        "probe": ["zoo", "probe"],
        "data": ["data"],
        "finetune": ["finetune"],
        "distill": ["distill"],
        "router": ["router"],
        "answer": ["answer"],
        "eval": ["eval"],
        "synth": ["synth", "traces"],
    }
    assert set(stages) == set(commands)
    for argv in commands.values():
        assert runner.invoke(app, [*argv, "--help"]).exit_code == 0


def test_bad_config_is_one_sentence_exit_2_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pseudocot", "run", str(ROOT / "configs" / "tiny.yaml"), "zoo.block_size=-4"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "tiny.yaml (with overrides): 'zoo.block_size': Input should be greater than or equal to 16." in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_unknown_stage_and_missing_config(tmp_path):
    result = runner.invoke(app, ["run", str(ROOT / "configs" / "tiny.yaml"), "--only", "wrld"])
    assert result.exit_code == 1 and "unknown stage 'wrld'" in result.output
    result = runner.invoke(app, ["data", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_config_show_and_fields():
    out = runner.invoke(app, ["config", "show", str(ROOT / "configs" / "paper.yaml"), "router.max_thoughts=5"]).output
    assert "max_thoughts: 5" in out and "meta-llama/Llama-3.2-1B-Instruct" in out
    out = runner.invoke(app, ["config", "fields", "distill"]).output
    assert "divergence" in out
