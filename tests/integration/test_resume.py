"""A fine-tune killed part-way resumes from its last checkpoint (rerun with --force too) and ends where an
unbroken run ends.

Only the killed run is a process of its own; the unbroken run and the resumed one run in this process,
which has already imported the training stack.
"""

import sys

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from pseudocot.cli import app

from .helpers import copy_run, kill_after_first_checkpoint


def _finetune(config, run_dir, *extra) -> list[str]:
    return [
        "finetune", str(config), "--which", "base",
        f"run_dir={run_dir}", "finetune.base.max_steps=150", "finetune.base.save_steps=5", *extra,
    ]  # fmt: skip


def test_killed_finetune_resumes_to_the_same_adapter(micro_run, tmp_path):
    config, run, _ = micro_run
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    copy_run(run, whole, ("world", "zoo", "data"))
    copy_run(run, broken, ("world", "zoo", "data"))
    result = CliRunner().invoke(app, _finetune(config, whole))
    assert result.exit_code == 0, result.output

    checkpoints = broken / "finetune" / "base.partial" / "checkpoints"
    # --force reruns a stage but keeps what a killed run of the same configuration left.
    kill_after_first_checkpoint([sys.executable, "-m", "pseudocot", *_finetune(config, broken, "--force")], checkpoints)
    assert list(checkpoints.glob("checkpoint-*")), "the run ended before a checkpoint could be interrupted"
    result = CliRunner().invoke(app, _finetune(config, broken, "--force"))
    assert result.exit_code == 0, result.output
    assert "resuming the killed run" in result.stderr and "finetune base: done" in result.stderr

    manifest = (broken / "finetune" / "base" / "manifest.json").read_text()
    assert '"resumed_from": null' not in manifest
    a = load_file(whole / "finetune" / "base" / "adapter" / "adapter_model.safetensors")
    b = load_file(broken / "finetune" / "base" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)
