"""The micro pipeline, run once per test run and read by every integration module that needs its outputs.

Tests only read it; one that reruns a stage on it works on a copy (``helpers.copy_run``).
"""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pseudocot.cli import app

from .helpers import micro_config


def _run_micro_pipeline(tmp: Path) -> None:
    result = CliRunner().invoke(app, ["run", str(micro_config(tmp))])
    assert result.exit_code == 0, result.output
    (tmp / "output.txt").write_text(result.output)


@pytest.fixture(scope="session")
def micro_run(build_once):
    """(config path, run directory, CLI output) of ``pseudocot run`` on the micro config, once per test run."""
    tmp = build_once("foundation", _run_micro_pipeline)
    return tmp / "micro.yaml", tmp / "run", (tmp / "output.txt").read_text()
