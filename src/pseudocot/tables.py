"""The tables stages print: the zoo probe, the router on its rollouts, the system on a split."""

from __future__ import annotations

from rich.table import Table

from pseudocot.config import PseudoCoTConfig
from pseudocot.progress import console

PROBE_LABELS = {"direct": "nothing", "gold": "gold expl.", "wrong_step": "a wrong step", "own_cot": "own CoT"}


def print_probe(accuracy: dict[str, dict[str, float]], cfg: PseudoCoTConfig) -> None:
    """Prints the probe: per model, subject, condition and difficulty; then easy/hard per model."""
    levels = cfg.world.levels if cfg.world else []
    split = cfg.probe.split if cfg.probe else "test"
    table = Table(title=f"Zoo probe, {split} split: accuracy by reasoning steps (chance 25%)")
    for col in ("model", "subject", "given", *(str(s) for s in levels), "all"):
        table.add_column(col, justify="left" if col in ("model", "subject", "given") else "right")
    for model, acc in accuracy.items():
        subjects = sorted({k.split("/")[1] for k in acc if k.count("/") == 2})
        for subject in subjects:
            for condition, label in PROBE_LABELS.items():
                cells = [acc.get(f"{condition}/{subject}/{level}") for level in [*levels, "all"]]
                table.add_row(model, subject, label, *("-" if c is None else f"{c:.0%}" for c in cells))
        table.add_section()
    console.print(table)
    if cfg.world is None:
        return
    easy, hard = cfg.world.easy_max_steps, cfg.world.hard_min_steps
    summary = Table(title=f"Easy (at most {easy} steps) and hard (at least {hard}) items")
    keys = (
        "direct/easy",
        "direct/read_off_long",
        "direct/hard_reasoning",
        "gold/hard_reasoning",
        "wrong_step/easy",
        "wrong_step/read_off_long",
        "own_cot/hard_reasoning",
    )
    for col in ("model", *(k.replace("/", " ").replace("_", " ") for k in keys)):
        summary.add_column(col, justify="left" if col == "model" else "right")
    for model, acc in accuracy.items():
        cells = [acc.get(k) for k in keys]
        summary.add_row(model, *("-" if c is None else f"{c:.0%}" for c in cells))
    console.print(summary)


def print_routing(metrics: dict) -> None:
    """Prints the router's figures on its training and validation rollouts, one row per figure."""
    splits = ("train", "validation")
    table = Table(title=f"Router (threshold {metrics['threshold']:.3f}) on its rollouts")
    table.add_column("")
    for split in splits:
        table.add_column(f"{split} ({metrics[split]['questions']})", justify="right")
    order = ["never", "always_1", "router", "router_call_rate", "router_mean_thoughts", "apgr", "apgr_entropy"]
    keys = sorted(
        (k for k in metrics["validation"] if k != "questions"),
        key=lambda k: (k not in order, order.index(k) if k in order else k),
    )
    for key in keys:
        ratio = "apgr" in key or "auroc" in key or "thoughts" in key
        cells = [f"{metrics[s][key]:.2f}" if ratio else f"{metrics[s][key]:.0%}" for s in splits]
        label = key.replace("_", " ").replace("always ", "always think ").replace("never", "never think")
        table.add_row(label + ("" if ratio or "rate" in key else " accuracy"), *cells)
    console.print(table)


def print_answers(metrics: dict, split: str) -> None:
    """Prints the system's accuracy on a split next to the base answering directly."""
    table = Table(title=f"The system on the {split} split ({metrics['questions']} questions)")
    parts = [p for p in ("easy", "hard", "all") if f"accuracy_{p}" in metrics]
    table.add_column("")
    for part in parts:
        table.add_column(part, justify="right")
    table.add_row("base alone (direct)", *(f"{metrics[f'direct_accuracy_{p}']:.0%}" for p in parts))
    table.add_row("base + TTM + router", *(f"{metrics[f'accuracy_{p}']:.0%}" for p in parts))
    console.print(table)
    console.print(
        f"thoughts given to {metrics['call_rate']:.0%} of questions, {metrics['thoughts_per_question']:.2f} per "
        f"question; {metrics['flops_per_question'] / 1e6:.2f} MFLOPs per question"
    )
    warn_thoughts_cut(metrics.get("thoughts_cut", 0), "the TTM", "decoding.ttm")  # older outputs have no count


def warn_thoughts_cut(count: int, whose: str, preset: str) -> None:
    """Says when thoughts stopped at their token ceiling: the reasoning lost its last steps, so the figures
    measure the ceiling as much as the model."""
    if count:
        console.print(
            f"[yellow]{count} thoughts of {whose} stopped at max_new_tokens before an end of turn, so their last "
            f"steps are missing; raise {preset}.max_new_tokens.[/]",
            highlight=False,
        )
