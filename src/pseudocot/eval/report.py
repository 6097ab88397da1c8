"""The evaluation report: the paper's Table 5.1 with intervals, paired tests and cost; CSV, JSON, PNG.

:func:`summarize` computes every figure from the per-item records alone, so anyone holding
``results.json`` can recompute them. :func:`write_report` writes into a directory:

* ``report.md``: Table 5.1's layout (rows = systems; accuracy, BLEU, ROUGE-L per benchmark), then
  per system and benchmark the 95% bootstrap interval, unanswered items, the exact McNemar test
  against the baseline on the same items, tokens and FLOPs per question and items per second;
* ``results.csv``: one row per system and benchmark with all of those figures;
* ``results.json``: the systems, the summary and every item's output (``items``);
* ``accuracy.png`` (the paper's figures 5.1-5.3: accuracy per system, one panel per benchmark),
  ``params_vs_accuracy.png`` (figure 5.4: a pseudo-CoT system counts its TTM's parameters) and
  ``accuracy_vs_flops.png`` (accuracy against FLOPs per question).

BLEU is sacrebleu's corpus BLEU divided by 100, so that, like ROUGE-L F1 (rouge-score), it lies in
0-1 as in the paper's table.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.table import Table

from pseudocot.errors import PseudoCoTError
from pseudocot.eval.harness import Evaluation
from pseudocot.eval.metrics import bleu, bootstrap_interval, mcnemar, rouge_l
from pseudocot.progress import console

CSV_FIELDS = [
    "system",
    "benchmark",
    "items",
    "accuracy",
    "ci_low",
    "ci_high",
    "unanswered",
    "bleu",
    "rouge_l",
    "reference",
    "answer_tokens",
    "thought_tokens",
    "flops",
    "parameters",
    "wall_s",
    "items_per_s",
    "baseline",
    "baseline_only",
    "system_only",
    "p_value",
]


def summarize(evaluation: Evaluation, baseline: str | None = None, samples: int = 1000, seed: int = 0) -> list[dict]:
    """One row of figures per (system, benchmark), computed from the per-item records.

    Raises:
        PseudoCoTError: ``baseline`` names no evaluated system.
    """
    names = [s["name"] for s in evaluation.systems]
    baseline = baseline or names[0]
    if baseline not in names:
        raise PseudoCoTError(f"eval.baseline {baseline!r} is not an evaluated system; use one of: {', '.join(names)}.")
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for item in evaluation.items:
        groups[(item["system"], item["benchmark"])].append(item)
    walls = {(r["system"], r["benchmark"]): r["wall_s"] for r in evaluation.runs}
    params = {s["name"]: s["parameters"] for s in evaluation.systems}
    base_hits = {b: {i["id"]: bool(i["correct"]) for i in groups[(baseline, b)]} for b in evaluation.benchmarks}
    rows = []
    for system in names:
        for bench in evaluation.benchmarks:
            items = groups[(system, bench)]
            n = len(items)
            hits = [bool(i["correct"]) for i in items]
            low, high = bootstrap_interval(hits, samples, seed=seed)
            row: dict[str, Any] = {
                "system": system,
                "benchmark": bench,
                "items": n,
                "accuracy": sum(hits) / n,
                "ci_low": low,
                "ci_high": high,
                "unanswered": sum(not i["answered"] for i in items),
                "bleu": bleu([i["output"] for i in items], [i["reference"] for i in items]) / 100,
                "rouge_l": rouge_l([i["output"] for i in items], [i["reference"] for i in items]),
                "reference": "/".join(sorted({i["reference_kind"] for i in items})),
                "answer_tokens": sum(i["tokens"]["answer"] for i in items) / n,
                "thought_tokens": sum(i["tokens"]["thoughts"] for i in items) / n,
                "flops": sum(i["flops"] for i in items) / n,
                "parameters": params[system],
                "wall_s": walls[(system, bench)],
                "items_per_s": n / walls[(system, bench)] if walls[(system, bench)] else float("inf"),
                "baseline": baseline,
            }
            test = mcnemar([base_hits[bench][i["id"]] for i in items], hits)
            row |= {"baseline_only": test["a_only"], "system_only": test["b_only"], "p_value": test["p_value"]}
            rows.append(row)
    return rows


def _cells(row: dict) -> list[str]:
    return [f"{row['accuracy']:.1%}", f"{row['bleu']:.3f}", f"{row['rouge_l']:.3f}"]


def markdown(rows: list[dict], benchmarks: list[str]) -> str:
    """The report's tables as Markdown: Table 5.1's layout, then intervals, tests and cost."""
    systems = list(dict.fromkeys(r["system"] for r in rows))
    at = {(r["system"], r["benchmark"]): r for r in rows}
    head = ["system", *(f"{b} {m}" for b in benchmarks for m in ("acc", "BLEU", "ROUGE-L"))]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in systems:
        lines.append("| " + " | ".join([s, *(c for b in benchmarks for c in _cells(at[(s, b)]))]) + " |")
    baseline = rows[0]["baseline"]
    detail = [
        "system",
        "benchmark",
        "accuracy [95% CI]",
        "unanswered",
        f"vs {baseline}: only base / only system, p",
        "tokens/q (answer + thoughts)",
        "MFLOPs/q",
        "params (M)",
        "items/s",
    ]
    lines += ["", "| " + " | ".join(detail) + " |", "|" + "---|" * len(detail)]
    for r in rows:
        cells = [
            r["system"],
            r["benchmark"],
            f"{r['accuracy']:.1%} [{r['ci_low']:.1%}, {r['ci_high']:.1%}]",
            str(r["unanswered"]),
            "-" if r["system"] == baseline else f"{r['baseline_only']} / {r['system_only']}, p={r['p_value']:.3g}",
            f"{r['answer_tokens']:.0f} + {r['thought_tokens']:.0f}",
            f"{r['flops'] / 1e6:.2f}",
            f"{r['parameters'] / 1e6:.2f}",
            f"{r['items_per_s']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    kinds = sorted({(r["benchmark"], r["reference"]) for r in rows})
    refs = "; ".join(f"{b}: {k}" for b, k in dict(kinds).items())
    lines += [
        "",
        f"BLEU (sacrebleu corpus BLEU / 100) and ROUGE-L F1 (rouge-score) compare each system's output (its "
        f"thoughts, then its answer) with the reference: {refs}. Intervals: percentile bootstrap of the "
        "accuracy. p: exact McNemar test on the same items.",
    ]
    return "\n".join(lines) + "\n"


def systems_list(systems: list[dict]) -> str:
    """What each row is: its kind, models, parameters counted, and the model it stands for."""
    lines = ["", "Systems:", ""]
    for info in systems:
        models = ", ".join(f"{role} {ref}" for role, ref in info.get("models", {}).items())
        extra = f"; policy {info['policy']}" if info.get("policy") else ""
        if "router" in info:  # a router row: where its threshold was calibrated, and any other regime
            router = info["router"]
            extra += f"; threshold {router['threshold']:.3g} calibrated on {router['calibrated_on']}"
            extra += f" ({router['regime']})" if "regime" in router else ""
        stands = f"; stands for {info['stands_for']}" if info.get("stands_for") else ""
        size = f"{info['parameters'] / 1e6:.2f}M parameters"
        lines.append(f"- **{info['name']}**: {info['kind']} ({models}{extra}), {size}{stands}")
    return "\n".join(lines) + "\n"


def print_table(rows: list[dict], benchmarks: list[str], title: str = "Evaluation (paper Table 5.1)") -> None:
    """Table 5.1's layout on the console."""
    table = Table(title=title)
    table.add_column("system")
    for b in benchmarks:
        for m in ("acc", "BLEU", "ROUGE-L"):
            table.add_column(f"{b}\n{m}", justify="right")
    at = {(r["system"], r["benchmark"]): r for r in rows}
    for s in dict.fromkeys(r["system"] for r in rows):
        table.add_row(s, *(c for b in benchmarks for c in _cells(at[(s, b)])))
    console.print(table)


def plot(rows: list[dict], benchmarks: list[str], out: Path) -> list[str]:
    """Writes the three figures (each system keeps its colour in all three); returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(dict.fromkeys(r["system"] for r in rows))
    colour = {s: f"C{i % 10}" for i, s in enumerate(systems)}
    at = {(r["system"], r["benchmark"]): r for r in rows}
    fig, axes = plt.subplots(len(benchmarks), 1, figsize=(2 + 0.8 * len(systems), 3.6 * len(benchmarks)), squeeze=False)
    for ax, bench in zip(axes[:, 0], benchmarks, strict=True):
        acc = [100 * at[(s, bench)]["accuracy"] for s in systems]
        err = [
            [100 * (at[(s, bench)]["accuracy"] - at[(s, bench)]["ci_low"]) for s in systems],
            [100 * (at[(s, bench)]["ci_high"] - at[(s, bench)]["accuracy"]) for s in systems],
        ]
        bars = ax.bar(range(len(systems)), acc, yerr=err, capsize=3, color=[colour[s] for s in systems])
        ax.bar_label(bars, fmt="%.0f", padding=2)
        ax.set_xticks(range(len(systems)), systems, rotation=30, ha="right", fontsize=8)
        ax.set_title(bench)
        ax.set_ylabel("accuracy (%), 95% CI")
        ax.set_ylim(0, 110)
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=110)
    plt.close(fig)
    for name, key, label in (
        ("params_vs_accuracy.png", "parameters", "parameters (a pseudo-CoT system counts its TTM)"),
        ("accuracy_vs_flops.png", "flops", "FLOPs per question (2 x parameters x tokens)"),
    ):
        fig, ax = plt.subplots(figsize=(9, 4.8))
        for k, bench in enumerate(benchmarks):
            for s in systems:
                row = at[(s, bench)]
                ax.scatter(row[key], 100 * row["accuracy"], color=colour[s], marker="os^Dv"[k % 5], s=40)
        for s in systems:
            ax.scatter([], [], color=colour[s], label=s)
        for k, bench in enumerate(benchmarks):
            ax.scatter([], [], color="black", marker="os^Dv"[k % 5], label=bench)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
    return ["accuracy.png", "params_vs_accuracy.png", "accuracy_vs_flops.png"]


def write_report(out: Path, evaluation: Evaluation, rows: list[dict], config: dict | None = None) -> list[str]:
    """Writes report.md, results.csv, results.json and the figures into ``out``; returns the file names."""
    out = Path(out)
    benchmarks = list(evaluation.benchmarks)
    (out / "report.md").write_text(markdown(rows, benchmarks) + systems_list(evaluation.systems), encoding="utf-8")
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows([{k: r[k] for k in CSV_FIELDS} for r in rows])
    data = {
        "config": config or {},
        "systems": evaluation.systems,
        "benchmarks": evaluation.benchmarks,
        "summary": rows,
        "runs": evaluation.runs,
        "items": evaluation.items,
    }
    (out / "results.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    return ["report.md", "results.csv", "results.json", *plot(rows, benchmarks, out)]
