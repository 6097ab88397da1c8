"""Helpers shared by the integration tests."""

import shutil
import subprocess
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def kill_after_first_checkpoint(command: list[str], checkpoints: Path, timeout: float = 120) -> None:
    """Runs ``command`` and kills it once the Trainer has finished a checkpoint in ``checkpoints``."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while (
        proc.poll() is None and time.time() < deadline and not list(checkpoints.glob("checkpoint-*/trainer_state.json"))
    ):
        time.sleep(0.01)
    proc.kill()
    proc.wait()


def micro_config(tmp_path: Path) -> Path:
    """configs/tiny.yaml shrunk to seconds (two one-layer zoo models, a few steps each), run in ``tmp_path/run``."""
    cfg = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    cfg["run_dir"] = str(tmp_path / "run")
    cfg["world"].update(train_per_level=15, validation_per_level=4, test_per_level=4, corpus_documents=120)
    cfg["zoo"].update(block_size=64, warmup_steps=2, save_steps=3, snapshot=None)
    cfg["zoo"]["models"] = {
        name: {
            **m,
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "intermediate_size": 64,
            "max_steps": 4,
            "batch_size": 2,
        }
        for name, m in cfg["zoo"]["models"].items()
        if name in ("tiny-8b", "tiny-3b")
    }
    for run in [*cfg["finetune"].values(), *cfg["distill"].values()]:
        run.update(max_steps=4, per_device_train_batch_size=2, save_steps=2, max_seq_length=128)
    cfg["distill"]["ttm"]["student"] = "zoo:tiny-3b"  # the micro zoo has two models
    # Both recipes: the paper's q/k LoRA from a cached teacher, and every weight from a live one.
    cfg["distill"]["mid"].update(trainable="qk_lora", teacher_logits="cached", top_k=8)
    cfg["distill"]["ttm"].update(trainable="full", teacher_logits="online")
    cfg["router"].update(train_questions=24, validation_questions=12, epochs=30, batch_size=8)
    cfg["decoding"]["ttm"]["max_new_tokens"] = 12
    cfg["decoding"]["base"]["max_new_tokens"] = 6
    cfg["decoding"]["eval"]["max_new_tokens"] = 12
    cfg["synth"]["traces"].update(questions=12, samples=2, batch_size=4)
    cfg["synth"]["traces"]["sampling"]["max_new_tokens"] = 12
    cfg["eval"]["systems"] = [s for s in cfg["eval"]["systems"] if s.get("model") != "zoo:tiny-1b"]
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def copy_run(run: Path, dest: Path, parts: tuple[str, ...] | None = None) -> Path:
    """Copies ``parts`` of the run directory ``run`` (all of it by default) to ``dest``, for a test that writes.

    The micro run is shared by the whole test run, so a test that runs a stage works on a copy (stage
    directories only: no lock files, no unfinished ``.partial`` directories).
    """
    for part in parts or [p.name for p in run.iterdir() if p.is_dir() and not p.name.endswith(".partial")]:
        shutil.copytree(run / part, dest / part)
    return dest
