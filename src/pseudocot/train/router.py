"""Router training (paper 3): ``pseudocot router CONFIG`` writes the pseudo-CoT system directory.

1. **Rollouts** on training questions (never the test set): base and TTM run the loop always
   thinking up to ``max_thoughts``; every answer's features and whether it is right are kept.
2. **Labels**: after the answer of step t, "a thought helps" when that answer is wrong and the
   answer after one more thought is right.
3. **Training**: the MLP on standardised features, full batch, AdamW, binary cross-entropy with
   the positive class weighted by its rarity.
4. **Calibration** on validation rollouts: every threshold is replayed exactly
   (:meth:`pseudocot.train.rollouts.Rollouts.simulate`); the one kept gives the best accuracy (the
   fewest thoughts among those within ``accuracy_tolerance`` of it), or the target call rate.

The rollouts run in the regime the system is used in: the base answers multiple choice in the answer
mode and with the decoding preset it will answer with (scored options, or a written answer whose option
is read off it), so the labels are about the answers the router will judge. :func:`recalibrate`
calibrates the threshold again when another base takes the system's place (an evaluation row).

Output (the system directory)::

    system.json         base, TTM (paths relative to this directory, or hub ids), protocol, presets, answer mode
    router.safetensors  the MLP's weights and feature standardisation
    router.json         its shape, max_thoughts, threshold, validation metrics and how it was calibrated
    calibration.jsonl   the questions its threshold was calibrated on
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from pseudocot.config import DecodingConfig, GenerationPreset, ProtocolConfig, RouterConfig
from pseudocot.errors import PseudoCoTError
from pseudocot.infer.generate import generation_config
from pseudocot.infer.router import EntropyPolicy, Router, RouterMLP
from pseudocot.infer.system import SYSTEM_FILE, PseudoCoT
from pseudocot.models import check_same_tokenizer, load_model, load_tokenizer
from pseudocot.progress import console
from pseudocot.records import Record, read_jsonl, write_jsonl
from pseudocot.train.rollouts import Rollouts, apgr, auroc, auroc_interval, curve, rollout

CALIBRATION_FILE = "calibration.jsonl"
CALIBRATION_RULE = ("calibrate", "accuracy_tolerance", "target_call_rate")  # the RouterConfig fields calibrate reads


def training_set(rollouts: Rollouts) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels of every decision in the rollouts: (N * M, F) and (N * M,)."""
    m = rollouts.max_thoughts
    x = torch.cat([rollouts.states[t].features(m) for t in range(m)])
    y = torch.cat([rollouts.helps(t) for t in range(m)]).float()
    return x, y


def fit(x: torch.Tensor, y: torch.Tensor, cfg: RouterConfig) -> RouterMLP:
    """Trains the MLP on features ``x`` and labels ``y``."""
    torch.manual_seed(cfg.seed)
    mlp = RouterMLP(x.shape[1], cfg.hidden_sizes)
    mlp.mean.copy_(x.mean(0))
    mlp.std.copy_(x.std(0).clamp_min(1e-6))
    positives = y.sum().clamp_min(1.0)
    pos_weight = ((len(y) - positives) / positives).clamp(max=100.0)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    optimizer = torch.optim.AdamW(mlp.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    mlp.train()
    for _ in range(cfg.epochs):
        optimizer.zero_grad()
        loss = loss_fn(mlp(x), y)
        loss.backward()
        optimizer.step()
    return mlp.eval()


def calibrate(rollouts: Rollouts, router: Router, cfg: RouterConfig) -> float:
    """The threshold the config asks for, chosen on validation rollouts."""
    points = curve(rollouts, rollouts.policy_scores(router))
    if cfg.calibrate == "call_rate":
        best = min(points, key=lambda p: (abs(p["call_rate"] - cfg.target_call_rate), -p["accuracy"]))
    else:
        top = max(p["accuracy"] for p in points)
        near = [p for p in points if p["accuracy"] >= top - cfg.accuracy_tolerance]
        best = min(near, key=lambda p: (p["mean_thoughts"], -p["accuracy"]))
    return float(best["threshold"])


def routing_metrics(rollouts: Rollouts, router: Router) -> dict[str, Any]:
    """The router against its baselines on one set of rollouts."""
    scores = rollouts.policy_scores(router)
    entropy = rollouts.policy_scores(EntropyPolicy())
    chosen = rollouts.simulate(scores, router.threshold)
    low, high = auroc_interval(rollouts.helps(0), scores[:, 0])
    return {
        "questions": len(rollouts.records),
        "never": rollouts.fixed(0)["accuracy"],
        "always_1": rollouts.fixed(1)["accuracy"],
        f"always_{rollouts.max_thoughts}": rollouts.fixed(rollouts.max_thoughts)["accuracy"],
        "router": chosen["accuracy"],
        "router_call_rate": chosen["call_rate"],
        "router_mean_thoughts": chosen["mean_thoughts"],
        "apgr": apgr(rollouts, scores),
        "apgr_entropy": apgr(rollouts, entropy),
        "auroc": auroc(rollouts.helps(0), scores[:, 0]),
        "auroc_low": low,  # 95% bootstrap interval over questions
        "auroc_high": high,
        "auroc_entropy": auroc(rollouts.helps(0), entropy[:, 0]),
    }


def _relative(ref: str, final: Path) -> str:
    """A model directory as a path relative to the system's final directory; hub ids unchanged."""
    path = Path(ref)
    if not path.exists():
        return ref
    return os.path.relpath(path.resolve(), final.resolve())


def train_router(
    cfg: RouterConfig,
    protocol: ProtocolConfig,
    decoding: DecodingConfig,
    base_ref: str,
    ttm_ref: str,
    train: list[Record],
    validation: list[Record],
    out: Path,
    final: Path,
    answer_mode: str = "score",
    answer_preset: GenerationPreset | None = None,
) -> dict[str, Any]:
    """Rolls out, trains, calibrates and writes the system into ``out`` (to be renamed ``final``).

    Args:
        answer_mode: how the base answers multiple choice in the rollouts (``score`` or ``generate``).
        answer_preset: the decoding of its written answers there (default: ``decoding.eval``).
    """
    answer_preset = answer_preset or decoding.eval
    tokenizer = load_tokenizer(base_ref)
    check_same_tokenizer(load_tokenizer(ttm_ref), tokenizer, f"the TTM {ttm_ref}", f"the base {base_ref}")
    system = PseudoCoT(
        load_model(base_ref),
        load_model(ttm_ref),
        tokenizer,
        protocol,
        max_thoughts=cfg.max_thoughts,
        base_preset=answer_preset,
        ttm_preset=decoding.ttm,
        batch_size=cfg.batch_size,
        answer_mode=answer_mode,
    )
    train = [r for r in train if r.choices][: cfg.train_questions]
    validation = [r for r in validation if r.choices][: cfg.validation_questions]
    how = "options scored" if answer_mode == "score" else "answers written"
    console.print(f"router: rolling out {len(train)} training and {len(validation)} validation questions ({how})")
    train_rollouts = rollout(system, train, cfg.max_thoughts)
    val_rollouts = rollout(system, validation, cfg.max_thoughts)
    x, y = training_set(train_rollouts)
    router = Router(fit(x, y, cfg), cfg.max_thoughts)
    router.threshold = calibrate(val_rollouts, router, cfg)
    metrics = {
        "train": routing_metrics(train_rollouts, router),
        "validation": routing_metrics(val_rollouts, router),
        "threshold": router.threshold,
        "positive_share": float(y.mean()),
        "parameters": {"base": system.parameters["base"], "ttm": system.parameters["ttm"]},
    }
    calibration = {"answer_mode": answer_mode, "base_preset": answer_preset.model_dump(mode="json")}
    calibration |= cfg.model_dump(mode="json", include=set(CALIBRATION_RULE)) | {"questions": len(validation)}
    router.meta = {"validation": metrics["validation"], "calibration": calibration}
    router.save(out)
    write_jsonl(validation, out / CALIBRATION_FILE)
    spec = {
        "base": _relative(base_ref, final),
        "ttm": _relative(ttm_ref, final),
        "max_thoughts": cfg.max_thoughts,
        "answer_mode": answer_mode,
        "protocol": protocol.model_dump(mode="json"),
        "base_preset": decoding.base.model_dump(mode="json"),
        "ttm_preset": decoding.ttm.model_dump(mode="json"),
        # Settings a preset's decoding mode does not use (a temperature under greedy decoding).
        "ignored_settings": {
            "base": generation_config(decoding.base, tokenizer)[1],
            "ttm": generation_config(decoding.ttm, tokenizer)[1],
        },
    }
    (out / SYSTEM_FILE).write_text(json.dumps(spec, indent=2))
    tokenizer.save_pretrained(out / "tokenizer")
    return metrics


def recalibrate(system: PseudoCoT, system_dir: Path) -> dict[str, Any]:
    """Calibrates the router's threshold again for the base the system holds now (another base in place of
    the one the router was trained with): on that base's own rollouts over the router's calibration
    questions, in the system's answer mode and decoding, by the router stage's rule. The MLP is kept.

    Returns:
        The threshold before and after, and the router against its baselines on those rollouts.

    Raises:
        PseudoCoTError: the system directory keeps no calibration questions (written before they were kept).
    """
    router, path = system.router, Path(system_dir) / CALIBRATION_FILE
    rule = router.meta.get("calibration") if router else None
    if rule is None or not path.is_file():
        raise PseudoCoTError(
            f"{system_dir} keeps no calibration questions ({CALIBRATION_FILE}) to calibrate its router again; "
            "rerun `pseudocot router --force` to write them."
        )
    records = list(read_jsonl(path))
    console.print(f"router: calibrating its threshold again on {len(records)} questions rolled out with this base")
    rollouts = rollout(system, records, system.max_thoughts)
    before = router.threshold
    router.threshold = calibrate(rollouts, router, RouterConfig(**{k: rule[k] for k in CALIBRATION_RULE}))
    return {"system_threshold": before, "threshold": router.threshold, "calibration": routing_metrics(rollouts, router)}
