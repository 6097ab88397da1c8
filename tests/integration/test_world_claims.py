"""The tiny world's promises, on the real configs/tiny.yaml, rebuilt on this machine (slow; `make test-world`).

* The zoo's gates, on the validation split: the base's model answers easy items and long items read
  off the question directly, is near chance on hard ones that need reasoning directly and with its own
  chain of thought, nearly always right with the gold explanation, and keeps easy items right under a
  thought with a wrong step.
* The whole pipeline after the zoo, from the shipped zoo snapshot (as ``make demo`` runs it), and
  every claim of :mod:`pseudocot.world.claims` (on the test split, and the distillation order on validation).
"""

from pathlib import Path

import pytest

from pseudocot.config import load_config
from pseudocot.pipeline import Pipeline
from pseudocot.world.claims import check_claims, validation_reasoning

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_bases_zoo_model_reads_thoughts_and_needs_them_on_hard_items_only(tmp_path):
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"run_dir={tmp_path}", "zoo.snapshot=null"])
    base = cfg.finetune.base.model.removeprefix("zoo:")
    cfg.zoo.models = {base: cfg.zoo.models[base]}
    pipeline = Pipeline(cfg)
    pipeline.stage("world")
    pipeline.stage("zoo")
    acc = pipeline.stage("probe")[0].metrics["accuracy"][base]
    assert acc["direct/easy"] >= 0.95 and acc["wrong_step/easy"] >= 0.95
    assert acc["direct/read_off_long"] >= 0.90  # long items whose last step sets the value: read off
    assert acc["direct/hard_reasoning"] <= 0.40
    assert acc["own_cot/hard_reasoning"] <= acc["direct/hard_reasoning"] + 0.10
    assert acc["gold/hard_reasoning"] >= 0.95


@pytest.mark.slow
def test_every_claim_holds_on_a_run_from_the_shipped_zoo(tmp_path):
    snapshot = ROOT / "snapshots" / "tiny-zoo"
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"run_dir={tmp_path}", f"zoo.snapshot={snapshot}"])
    pipeline = Pipeline(cfg)
    pipeline.run()
    world = cfg.world
    validation = validation_reasoning(tmp_path, cfg.protocol, world.easy_max_steps, world.hard_min_steps)
    failed = [c for c in check_claims(tmp_path, world.hard_min_steps, validation) if not c.holds]
    assert not failed, "\n".join(f"{c.name}: {c.value:.3f}, must be {c.rule} {c.threshold:.3g}" for c in failed)
