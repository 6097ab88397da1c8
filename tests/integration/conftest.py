"""The micro pipeline, run once per session and read by every integration module that needs its outputs.

Tests only read it; one that reruns a stage on it works on a copy (``helpers.copy_run``).
"""

import pytest
from typer.testing import CliRunner

from pseudocot.cli import app

from .helpers import micro_config


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory):
    """(config path, run directory, CLI output) of ``pseudocot run`` on the micro config."""
    tmp = tmp_path_factory.mktemp("foundation")
    config = micro_config(tmp)
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    return config, tmp / "run", result.output
