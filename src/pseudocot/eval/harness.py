"""The evaluation harness (paper 5): every system answers every benchmark, item by item.

A system is one of three kinds (:class:`~pseudocot.config.EvalSystemConfig`):

* ``plain``: a causal LM answering directly (the base, a fine-tuned base, a peer model);
* ``cot``: the same model writing its own chain of thought first, then answering given it;
* ``pseudo_cot``: a base + TTM + router system (optionally with another base in place of its own,
  whose router threshold ``eval.recalibrate`` calibrates again on that base's own rollouts).

All three run through :class:`~pseudocot.infer.system.PseudoCoT` with the same protocol (system
instruction, one-shot example, the model's own chat template) and the same evaluation decoding, so
they differ only in what the paper compares: who writes the thoughts, and whether there are any. A
plain model is the loop with the ``never`` policy; its own chain of thought is the thought-first
variant with the model as its own thought writer.

:func:`evaluate` returns one record per (system, benchmark, item) with the output, the option it
picks, the reference its BLEU and ROUGE-L are computed against, tokens and FLOPs, plus the wall time
of each (system, benchmark) run. :mod:`pseudocot.eval.report` turns them into the report.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pseudocot.config import EvalConfig, EvalSystemConfig, GenerationPreset, ProtocolConfig, section_hash
from pseudocot.errors import PseudoCoTError
from pseudocot.eval.benchmarks import reference
from pseudocot.infer.choice import is_right
from pseudocot.infer.loop import Result
from pseudocot.infer.system import PseudoCoT, read_system
from pseudocot.models import load_model, load_tokenizer
from pseudocot.progress import console, counter
from pseudocot.records import LETTERS, Record
from pseudocot.stage import read_json
from pseudocot.tables import warn_thoughts_cut
from pseudocot.train.router import recalibrate


@dataclass
class Evaluation:
    """What :func:`evaluate` measured: systems, benchmarks, per-item outputs and run times."""

    systems: list[dict[str, Any]] = field(default_factory=list)  # name, kind, models, parameters, ...
    benchmarks: dict[str, int] = field(default_factory=dict)  # name -> items
    items: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)  # system, benchmark, items, wall_s


def default_systems(
    base_model: str | None, finetuned_base: str | None, peers: Sequence[str], with_thoughts: bool = True
) -> list[EvalSystemConfig]:
    """The paper's rows: base, base + pseudo-CoT, fine-tuned base, fine-tuned base + pseudo-CoT, peers.

    Without a pseudo-CoT system (``with_thoughts`` false) the rows with thoughts are left out.
    """
    systems = []
    if base_model:
        systems.append(EvalSystemConfig(name="base", kind="plain", model=base_model, stands_for=base_model))
        if with_thoughts:
            systems.append(
                EvalSystemConfig(name="base + pseudo-CoT", kind="pseudo_cot", model=base_model, stands_for=base_model)
            )
    if finetuned_base:
        systems.append(EvalSystemConfig(name="fine-tuned base", kind="plain", model=finetuned_base))
        if with_thoughts:
            systems.append(EvalSystemConfig(name="fine-tuned base + pseudo-CoT", kind="pseudo_cot"))
    systems += [EvalSystemConfig(name=peer, kind="plain", model=peer, stands_for=peer) for peer in peers]
    return systems


def load_system(
    spec: EvalSystemConfig,
    resolve: Callable[[str], str],
    default_system: str | None,
    protocol: ProtocolConfig,
    preset: GenerationPreset,
    cfg: EvalConfig,
) -> tuple[PseudoCoT, dict[str, Any]]:
    """Loads one system; returns it and its description (kind, models, parameters counted)."""
    info: dict[str, Any] = {"name": spec.name, "kind": spec.kind, "stands_for": spec.stands_for}
    if spec.kind == "pseudo_cot":
        directory = spec.system or default_system
        if directory is None:
            raise PseudoCoTError(f"system {spec.name!r} needs a system directory; set its 'system' or run the router.")
        base = resolve(spec.model) if spec.model else None
        runner = PseudoCoT.load(
            directory, base=base, base_preset=preset, batch_size=cfg.batch_size, answer_mode=cfg.answer_mode
        )
        recorded = read_system(directory)
        info |= {"models": {"base": spec.model or recorded["base"], "ttm": recorded["ttm"]}, "system": str(directory)}
        info |= {"policy": spec.policy, "max_thoughts": runner.max_thoughts}
        if spec.policy == "router":
            info["router"] = _calibrated(runner, spec, Path(directory), cfg)
    else:
        ref = resolve(spec.model or "")
        tokenizer = load_tokenizer(ref)
        if not tokenizer.chat_template:
            raise PseudoCoTError(
                f"model {spec.model!r} of system {spec.name!r} has no chat template; "
                "evaluate an instruct or chat model."
            )
        model = load_model(ref)
        runner = PseudoCoT(
            model,
            model,
            tokenizer,
            protocol,
            base_preset=preset,
            ttm_preset=preset,
            batch_size=cfg.batch_size,
            answer_mode=cfg.answer_mode,
        )
        info["models"] = {"base": spec.model} | ({"thoughts": spec.model} if spec.kind == "cot" else {})
    # Figure 5.4 counts a pseudo-CoT system's TTM into its parameters; one model counts once.
    params = runner.parameters
    info["parameters"] = params["base"] + (params["ttm"] if spec.kind == "pseudo_cot" else 0)
    return runner, info


def recalibrates(spec: EvalSystemConfig, cfg: EvalConfig) -> bool:
    """Whether the row's router threshold is calibrated again: a router row with another base, when asked."""
    return cfg.recalibrate and spec.kind == "pseudo_cot" and spec.policy == "router" and spec.model is not None


def _calibrated(runner: PseudoCoT, spec: EvalSystemConfig, directory: Path, cfg: EvalConfig) -> dict[str, Any]:
    """Where a router row's threshold comes from (calibrated again on a row's own base when asked); a base or a
    regime other than the one the threshold was calibrated on is printed and kept in the row's description."""
    info: dict[str, Any] = {"calibrated_on": "the system's base"}
    if recalibrates(spec, cfg):
        found = recalibrate(runner, directory)
        info = {"calibrated_on": "this base", "system_threshold": found["system_threshold"]}
        info["calibration"] = found["calibration"]
    elif spec.model is not None:
        console.print(
            f"[yellow]{spec.name}: its router's threshold was calibrated on the system's own base, not on "
            f"{spec.model}; eval.recalibrate: true calibrates it on this base's rollouts.[/]"
        )
    info["threshold"] = runner.router.threshold
    note = runner.regime_note()
    if note:
        info["regime"] = note
        console.print(f"[yellow]{spec.name}: {note} (router.answer_mode and router.preset set its regime).[/]")
    return info


def run_system(runner: PseudoCoT, spec: EvalSystemConfig, records: Sequence[Record]) -> list[Result]:
    """The system's results on ``records``."""
    if spec.kind == "plain":
        return runner.run(records, "never", max_thoughts=0)
    if spec.kind == "cot":
        return runner.thought_first(records)
    return runner.run(records, spec.policy)


def item_record(system: str, benchmark: str, record: Record, result: Result) -> dict[str, Any]:
    """One item's outcome, with all that its figures are computed from."""
    ref, ref_kind = reference(record)
    # The system's visible output: its thoughts (the reasoning a user sees), then its final answer.
    output = "\n".join([*result.thoughts, result.answer])
    return {
        "system": system,
        "benchmark": benchmark,
        "id": record.id,
        "subject": record.subject,
        "difficulty": record.difficulty,
        "gold": record.answer,
        "pick": LETTERS[result.choice] if result.choice is not None else None,
        "correct": is_right(record, result.choice),
        "answered": result.choice is not None,
        "answer": result.answer,
        "thoughts": result.thoughts,
        "thoughts_cut": result.thoughts_cut,
        # The base's option probabilities at its first answer: what the entropy policy would have judged.
        "confidence": result.confidence[0] if result.confidence else None,
        "output": output,
        "reference": ref,
        "reference_kind": ref_kind,
        "tokens": {"answer": result.usage["base"].total, "thoughts": result.usage["ttm"].total},
        "flops": result.flops,
    }


def evaluate(
    systems: Sequence[EvalSystemConfig],
    benchmarks: dict[str, list[Record]],
    cfg: EvalConfig,
    protocol: ProtocolConfig,
    preset: GenerationPreset,
    resolve: Callable[[str], str] = lambda ref: ref,
    default_system: str | None = None,
    cache_dir: Path | None = None,
    context: dict[str, Any] | None = None,
    reuse: bool = True,
    benchmark_context: dict[str, dict[str, Any]] | None = None,
) -> Evaluation:
    """Every system on every benchmark; systems are loaded one at a time and freed after.

    Args:
        systems: the rows.
        benchmarks: benchmark name -> its items.
        preset: the evaluation decoding (the base's answers, and thoughts of ``cot`` systems).
        resolve: maps a model reference (``zoo:NAME``...) to a directory or hub id.
        default_system: the system directory of ``pseudo_cot`` rows that name none.
        cache_dir: where each finished (system, benchmark) run is kept, under :func:`run_key`; a
            later evaluation (after a crash or a kill, with another baseline or bootstrap, or with
            more systems) takes the runs found there and loads only the systems that have runs left.
        context: what else decides a run's outputs (split, decoding, protocol, the models' and
            data's manifest hashes); part of every run's key.
        reuse: take kept runs (``False``: run everything again, and keep the new runs).
        benchmark_context: benchmark name -> what else decides only that benchmark's runs (the hashes
            of its files), so adding a benchmark leaves the others' kept runs valid.
    """
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise PseudoCoTError("two evaluation systems share a name; give each row its own name.")
    out = Evaluation(benchmarks={name: len(records) for name, records in benchmarks.items()})
    total = len(systems) * sum(len(records) for records in benchmarks.values())
    with counter("evaluating", total) as advance:
        for spec in systems:
            # A recalibrated row's outputs also depend on its calibration: it keys the row's runs (only that row's).
            row_context = (context or {}) | ({"recalibrated": True} if recalibrates(spec, cfg) else {})
            own = benchmark_context or {}
            keys = {b: run_key(spec, b, row_context | own.get(b, {})) for b in benchmarks}
            done = {b: _cached(cache_dir, keys[b]) if reuse else None for b in benchmarks}
            runner, info = None, next((d["system"] for d in done.values() if d), None)
            if not all(done.values()):
                advance(0, f"loading {spec.name}")
                runner, info = load_system(spec, resolve, default_system, protocol, preset, cfg)
            out.systems.append(info)
            for bench, records in benchmarks.items():
                cached = done[bench] is not None
                if not cached:
                    advance(0, f"{spec.name} on {bench}")
                    started = time.perf_counter()
                    results = run_system(runner, spec, records)
                    run = {"system": spec.name, "benchmark": bench, "items": len(records)}
                    run["wall_s"] = time.perf_counter() - started
                    items = [item_record(spec.name, bench, r, res) for r, res in zip(records, results, strict=True)]
                    done[bench] = {"system": info, "run": run, "items": items}
                    if cache_dir is not None:
                        path = cache_dir / f"{keys[bench]}.json"
                        path.with_suffix(".tmp").write_text(json.dumps(done[bench]), encoding="utf-8")
                        path.with_suffix(".tmp").rename(path)
                out.items += done[bench]["items"]
                out.runs.append(done[bench]["run"])
                advance(len(records), "")
                hits = sum(item["correct"] for item in done[bench]["items"])
                wall = done[bench]["run"]["wall_s"]
                console.print(
                    f"[dim]{spec.name} on {bench}: {hits / len(records):.1%} of {len(records)} items in {wall:.1f} s "
                    f"({len(records) / wall:.1f} items/s){' (kept from an earlier run)' if cached else ''}[/]",
                    highlight=False,
                )
                _warn_cut(spec, bench, done[bench]["items"])
            del runner
            gc.collect()
    return out


def _warn_cut(spec: EvalSystemConfig, bench: str, items: list[dict[str, Any]]) -> None:
    """A row's thoughts that stopped at their ceiling (runs kept from before the count have none)."""
    cut = sum(item.get("thoughts_cut", 0) for item in items)
    warn_thoughts_cut(cut, f"{spec.name} ({bench})", "decoding.eval" if spec.kind == "cot" else "decoding.ttm")


def run_key(spec: EvalSystemConfig, benchmark: str, context: dict[str, Any]) -> str:
    """The key of one (system, benchmark) run: everything that decides its outputs, hashed."""
    return section_hash({"system": spec.model_dump(mode="json"), "benchmark": benchmark, **context})


def _cached(cache_dir: Path | None, key: str) -> dict[str, Any] | None:
    """A (system, benchmark) run kept by an earlier evaluation, if any; a damaged one is run again."""
    path = cache_dir / f"{key}.json" if cache_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        kept = read_json(path, ("system", "run", "items"))
    except PseudoCoTError:
        return None
    whole = isinstance(kept["system"], dict) and isinstance(kept["run"], dict) and "wall_s" in kept["run"]
    return kept if whole and isinstance(kept["items"], list) else None
