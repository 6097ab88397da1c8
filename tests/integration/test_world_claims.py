"""The tiny world's promises, on the real configs/tiny.yaml (slow: about 3 minutes; `make test-all`).

For the zoo model the base is fine-tuned from: hard items are near chance when answered directly,
nearly always right with the gold explanation in context, and easy items are answered directly.
"""

from pathlib import Path

import pytest

from pseudocot.config import load_config
from pseudocot.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_bases_zoo_model_needs_thoughts_on_hard_items_only(tmp_path):
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"run_dir={tmp_path}"])
    base = cfg.finetune.base.model.removeprefix("zoo:")
    cfg.zoo.models = {base: cfg.zoo.models[base]}
    pipeline = Pipeline(cfg)
    pipeline.world()
    pipeline.zoo()
    acc = pipeline.probe().metrics["accuracy"][base]
    assert abs(acc["direct/hard"] - 0.25) <= 0.10
    assert acc["gold/hard"] >= 0.90
    assert acc["direct/easy"] >= 0.80
