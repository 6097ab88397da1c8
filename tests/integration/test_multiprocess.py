"""The training stages run unchanged under `accelerate launch`: 2 processes on the CPU (torchrun, gloo).

Without CUDA, `--multi_gpu` still starts the torchrun launcher and each process trains on the CPU;
`--cpu` would pick the single-process (or MPI) launcher.
"""

import json
import subprocess
import sys
from pathlib import Path

from .helpers import copy_run


def test_finetune_and_distill_under_accelerate_launch_with_two_processes(micro_run, tmp_path):
    config, run, _ = micro_run
    dest = copy_run(run, tmp_path / "run", ("world", "zoo", "data"))
    accelerate = Path(sys.executable).with_name("accelerate")
    # One launch runs both training stages; the mid hop reads a cached teacher, and small shards make both
    # processes compute some of them.
    proc = subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
         "-m", "pseudocot", "run", str(config), "--only", "finetune,distill", f"run_dir={dest}",
         "distill.mid.cache_shard_size=16"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = ("finetune/base", "finetune/teacher", "distill/mid", "distill/ttm")
    manifests = {stage: json.loads((dest / stage / "manifest.json").read_text()) for stage in stages}
    assert all(manifest["metrics"]["processes"] == 2 for manifest in manifests.values())
    mid = manifests["distill/mid"]
    assert mid["metrics"]["cache_shards"] == mid["metrics"]["cache_computed"] > 2
    assert (
        len(list((dest / "cache" / "teacher_topk" / "mid").glob("shard-*.safetensors")))
        == mid["metrics"]["cache_shards"]
    )
    assert (dest / "finetune" / "teacher" / "merged" / "model.safetensors").is_file()
    assert (dest / "distill" / "mid" / "model.safetensors").is_file()
    assert not list(dest.rglob("*.partial"))
