"""A fine-tune killed part-way resumes from its last checkpoint (rerun with --force too) and ends where an
unbroken run ends."""

import subprocess
import sys

import torch
from safetensors.torch import load_file

from .helpers import copy_run, kill_after_first_checkpoint


def _finetune(config, run_dir, *extra):
    return [
        sys.executable, "-m", "pseudocot", "finetune", str(config), "--which", "base",
        f"run_dir={run_dir}", "finetune.base.max_steps=150", "finetune.base.save_steps=5", *extra,
    ]  # fmt: skip


def test_killed_finetune_resumes_to_the_same_adapter(micro_run, tmp_path):
    config, run, _ = micro_run
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    copy_run(run, whole, ("world", "zoo", "data"))
    copy_run(run, broken, ("world", "zoo", "data"))
    subprocess.run(_finetune(config, whole), check=True, capture_output=True)

    checkpoints = broken / "finetune" / "base.partial" / "checkpoints"
    # --force reruns a stage but keeps what a killed run of the same configuration left.
    kill_after_first_checkpoint(_finetune(config, broken, "--force"), checkpoints)
    assert list(checkpoints.glob("checkpoint-*")), "the run ended before a checkpoint could be interrupted"
    result = subprocess.run(_finetune(config, broken, "--force"), check=True, capture_output=True, text=True)
    assert "resuming the killed run" in result.stderr and "finetune base: done" in result.stderr

    manifest = (broken / "finetune" / "base" / "manifest.json").read_text()
    assert '"resumed_from": null' not in manifest
    a = load_file(whole / "finetune" / "base" / "adapter" / "adapter_model.safetensors")
    b = load_file(broken / "finetune" / "base" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)
