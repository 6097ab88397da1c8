"""Each stage's runner: what one part of a stage reads, what keys its output, and the work that writes it.

:data:`pseudocot.graph.STAGES` names these functions; :class:`pseudocot.pipeline.Pipeline` runs them through
:func:`pseudocot.stage.run_stage`. Each imports what it runs, so importing this module stays cheap.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from pseudocot.config import PseudoCoTConfig
from pseudocot.errors import PseudoCoTError
from pseudocot.memory import FP32, LOOP_BATCHES, Estimate, Shape, inference, training
from pseudocot.progress import console
from pseudocot.stage import StageResult, file_hash, input_hash, is_main_process, manifest_hash, stage_key
from pseudocot.tables import print_answers, print_probe, print_routing

if TYPE_CHECKING:
    from pseudocot.graph import Run


# Training settings that change how a run goes (its memory and time), not the weights it makes: they do not
# key its output, so turning them on for a bigger machine reruns nothing. A distillation's logits at the
# target positions only give the same loss and gradients (to float rounding, tests/unit/test_distill_logits.py).
HOW_IT_RUNS = {"gradient_checkpointing", "logits"}


def training_key(settings: BaseModel) -> dict[str, Any]:
    """A training run's settings as they key its output: all but :data:`HOW_IT_RUNS`."""
    return settings.model_dump(mode="json", exclude=HOW_IT_RUNS)


@dataclass
class Job:
    """What one part of a stage runs: the config it is keyed on, the runner, the user files it reads."""

    config: Any  # the config section, or a dict of sections, whose hash keys the output
    work: Callable[[Path], dict | None]  # writes the output into the directory it is given; returns metrics
    files: Sequence[Path] = ()
    memory: Callable[[], Estimate] | None = None  # its peak memory, estimated from its models' configs


# -- memory estimates (printed before a stage runs on a GPU) ------------------------------------------------------

PROMPT_TOKENS = 512  # a question's prompt as the inference estimates assume it (system turn, one-shot, question)
HALF = 2  # bytes of a bfloat16 value: how inference loads models on a GPU
ANSWER_BATCH = 32  # questions per batch of the answer stage (PseudoCoT's default)


def _shape(ref: str | Path) -> Shape:
    from transformers import AutoConfig

    return Shape.of(AutoConfig.from_pretrained(str(ref)))


def _training_estimate(settings: Any, model: str, teacher: str | None = None) -> Estimate:
    """A fine-tune's or a distillation hop's step at its batch size and longest sequence."""
    shape, dtype = _shape(model), 2 if settings.bf16 else FP32
    method = getattr(settings, "method", None) or settings.trainable  # a fine-tune's, or a distillation hop's
    adapter = method.endswith("lora")
    targets = ("q_proj", "k_proj") if method == "qk_lora" else tuple(settings.lora.target_modules)  # as distill's
    trainable = shape.trainable("lora" if adapter else method, targets, settings.lora.r)
    weights = shape.weight_bytes(dtype, getattr(settings, "load_in_4bit", False))
    teacher_weights = _shape(teacher).weight_bytes(dtype) if teacher else 0.0
    tokens = settings.per_device_train_batch_size * settings.max_seq_length
    return training(shape, tokens, weights, trainable, adapter, dtype, settings.gradient_checkpointing, teacher_weights)


def _loop_estimate(
    models: Sequence[str | Path], batch: int, beams: int, thoughts: int, answer: int, thought: int, held: int = 0
) -> Estimate:
    """Generation with these models loaded together: a batch's ``beams`` sequences each, and ``held`` batches
    of the loop's per-question caches besides (:data:`LOOP_BATCHES`), every sequence a prompt, ``thoughts + 1``
    answers of ``answer`` tokens and ``thoughts`` thoughts of ``thought``."""
    shapes = [_shape(m) for m in dict.fromkeys(models)]
    context = PROMPT_TOKENS + (thoughts + 1) * answer + thoughts * thought
    return inference([(s, s.weight_bytes(HALF)) for s in shapes], batch * (beams + held), context, HALF)


def _system_models(system_dir: Path, base: str | None = None) -> tuple[list[str], int, int]:
    """A system directory's base (or ``base``) and TTM, its most thoughts and the TTM's new tokens."""
    spec = json.loads((system_dir / "system.json").read_text())
    refs = [base or spec["base"], spec["ttm"]]
    refs = [str(system_dir / r) if (system_dir / r).exists() else r for r in refs]
    return refs, spec["max_thoughts"], spec["ttm_preset"]["max_new_tokens"]


def one_part(cfg: PseudoCoTConfig) -> list[str]:
    return [""]


# -- world and zoo -------------------------------------------------------------------------------------------------


def no_inputs(run: Run, part: str) -> list[Path]:
    return []


def world(run: Run, part: str) -> Job:
    from pseudocot.world.build import WORLD_FORMAT, build_world

    world, protocol = run.cfg.world, run.cfg.protocol
    # The generators' format keys the output too: a world written by older generators is rebuilt.
    return Job({"world": world, "protocol": protocol, "format": WORLD_FORMAT}, partial(build_world, world, protocol))


def _pretrain(run: Run, name: str, out: Path) -> dict:
    """Pretrains one zoo model; each role's corpus is tokenized once per run."""
    from pseudocot.models import load_tokenizer
    from pseudocot.world.zoo import PackedBlocks, pretrain, read_corpus

    zoo = run.cfg.zoo
    role = zoo.models[name].corpus
    blocks = run.memo.setdefault("zoo_blocks", {})
    if role not in blocks:
        tokenizer = load_tokenizer(run.world_dir / "tokenizer")
        blocks[role] = PackedBlocks(read_corpus(run.world_dir, role), tokenizer, zoo.block_size)
    return pretrain(name, zoo.models[name], zoo, run.world_dir, out, blocks[role])


def zoo_inputs(run: Run, name: str) -> list[Path]:
    # A zoo model is keyed on what it trains on, its role's corpus and the tokenizer, not the whole world:
    # changing another role's corpus leaves it up to date (and its snapshot usable).
    return [run.world_dir / "corpus" / f"{run.cfg.zoo.models[name].corpus}.jsonl", run.world_dir / "tokenizer"]


def zoo(run: Run, name: str) -> Job:
    from pseudocot.world.zoo import copy_snapshot, snapshot_matches

    zoo = run.cfg.zoo
    # Neither how often it checkpoints nor where a snapshot lies changes the model: neither keys it.
    section = {
        "model": zoo.models[name],
        "zoo": zoo.model_dump(mode="json", exclude={"models", "save_steps", "snapshot", *HOW_IT_RUNS}),
    }
    work = partial(_pretrain, run, name)
    memory = partial(_zoo_estimate, run, name)
    if zoo.snapshot is not None:
        snapshot = Path(zoo.snapshot) / name
        if snapshot_matches(snapshot, stage_key("zoo", section, zoo_inputs(run, name))):
            work = partial(copy_snapshot, snapshot)
        elif is_main_process():
            why = "was not built for this config, corpus and tokenizer" if snapshot.exists() else "does not exist"
            console.print(f"zoo {name}: the snapshot {snapshot} {why}; pretraining it.")
    return Job(section, work, memory=memory)


def _zoo_estimate(run: Run, name: str) -> Estimate:
    """A zoo model's pretraining step: every float32 weight trained on a batch of blocks."""
    from pseudocot.models import load_tokenizer
    from pseudocot.world.zoo import llama_config

    zoo, model = run.cfg.zoo, run.cfg.zoo.models[name]
    shape = Shape.of(llama_config(model, load_tokenizer(run.world_dir / "tokenizer")))
    tokens, weights = model.batch_size * zoo.block_size, shape.weight_bytes(FP32)
    return training(shape, tokens, weights, shape.parameters, False, FP32, zoo.gradient_checkpointing)


def probe_inputs(run: Run, part: str) -> list[Path]:
    return [run.world_dir, *(run.zoo_dir(name) for name in run.cfg.zoo.models)]


def probe(run: Run, part: str) -> Job:
    from pseudocot.world.build import world_split
    from pseudocot.world.probe import probe_model

    probe, world, protocol = run.cfg.probe, run.cfg.world, run.cfg.protocol

    def work(out: Path) -> dict:
        records = world_split(run.world_dir, probe.split)
        results = {
            name: probe_model(
                run.zoo_dir(name), records, protocol, world.easy_max_steps, world.hard_min_steps, probe.batch_size
            )
            for name in run.cfg.zoo.models
        }
        (out / "results.json").write_text(json.dumps(results, indent=2))
        return {"split": probe.split, "items": len(records), "accuracy": results}

    def memory() -> Estimate:  # the zoo's models score options one at a time: the largest one's
        estimates = [_loop_estimate([run.zoo_dir(n)], probe.batch_size, 1, 0, 0, 0) for n in run.cfg.zoo.models]
        return max(estimates, key=lambda e: e.total)

    return Job({"probe": probe, "world": world, "protocol": protocol}, work, memory=memory)


# -- data and synthetic data ---------------------------------------------------------------------------------------


def _data_world(run: Run) -> Path | None:
    """The world directory, when the data stage reads it."""
    data = run.cfg.data
    uses_world = run.cfg.world is not None and (
        any(s.kind == "tiny" for s in data.sources) or data.tokenizer == "world"
    )
    return run.world_dir if uses_world else None


def data_inputs(run: Run, part: str) -> list[Path]:
    world_dir = _data_world(run)
    return [world_dir] if world_dir else []


def data(run: Run, part: str) -> Job:
    from pseudocot.data.build import form_data
    from pseudocot.data.loaders import source_files

    data, protocol, world_dir = run.cfg.data, run.cfg.protocol, _data_world(run)
    files = [
        f for s in data.sources if s.kind != "tiny" for split in data.splits for f in source_files(s, split, world_dir)
    ]
    return Job({"data": data, "protocol": protocol}, lambda out: form_data(data, protocol, out, world_dir), files)


def synth_parts(cfg: PseudoCoTConfig) -> list[str]:
    return [kind for kind in ("traces", "qa") if getattr(cfg.synth, kind) is not None]


def synth_inputs(run: Run, kind: str) -> list[Path]:
    cfg = getattr(run.cfg.synth, kind)
    models = run.stage_of(cfg.model) if cfg else []
    return [run.data_dir, *models] if kind == "traces" else models


def synth(run: Run, kind: str) -> Job:
    if getattr(run.cfg.synth, kind) is None:
        raise PseudoCoTError(f"the config has no synth.{kind} section; add one (see the README).")
    return _traces(run) if kind == "traces" else _qa(run)


def _traces(run: Run) -> Job:
    from pseudocot.records import read_jsonl
    from pseudocot.synth.traces import synthesize_traces

    cfg = run.cfg.synth.traces
    model = run.resolve_model(cfg.model)

    def work(out: Path) -> dict:
        split = run.data_dir / f"{cfg.split}.jsonl"
        if not split.is_file():
            raise PseudoCoTError(f"the data stage has no {cfg.split} split at {split}; run `pseudocot data` first.")
        records = list(read_jsonl(split))[: cfg.questions]
        return synthesize_traces(cfg, run.cfg.protocol, model, records, run.data_dir, out)

    memory = partial(_loop_estimate, [model], cfg.batch_size, cfg.sampling.num_beams, 0, cfg.sampling.max_new_tokens, 0)
    return Job({"traces": cfg, "protocol": run.cfg.protocol}, work, memory=memory)


def _qa(run: Run) -> Job:
    from pseudocot.infer.generate import generate
    from pseudocot.models import load_model, load_tokenizer
    from pseudocot.synth.qa import document_files, synthesize_qa

    cfg = run.cfg.synth.qa
    model_ref = run.resolve_model(cfg.model)
    files = document_files(cfg.documents)  # a missing folder fails before any model loads
    if not files:
        raise PseudoCoTError(f"document folder {cfg.documents} has no .txt, .md or .pdf files; add some documents.")
    root = Path(cfg.documents)

    def work(out: Path) -> dict:
        tokenizer = load_tokenizer(model_ref)
        if not tokenizer.chat_template:
            raise PseudoCoTError(f"the Q&A model {cfg.model!r} has no chat template; use an instruct model.")
        loaded: list = []

        def write(texts: list[str]) -> list[str]:
            if not loaded:
                loaded.append(load_model(model_ref).eval())
            return generate(loaded[0], tokenizer, texts, cfg.generation, cfg.batch_size).texts

        return synthesize_qa(cfg, tokenizer, write, out)

    generation = cfg.generation
    memory = partial(_loop_estimate, [model_ref], cfg.batch_size, generation.num_beams, 0, generation.max_new_tokens, 0)
    return Job({"qa": cfg, "documents": [str(f.relative_to(root)) for f in files]}, work, files, memory)


def show_synth(run: Run, result: StageResult) -> None:
    m = result.metrics
    if not is_main_process():
        return
    if "accepted_traces" in m:
        console.print(
            f"traces: {m['acceptance_rate_all']:.1%} of {m['questions'] * m['samples_per_question']} samples "
            f"reached the gold answer; {m['questions_with_a_trace_all']:.1%} of {m['questions']} questions "
            f"have one; {m['accepted_traces']} distinct traces kept"
        )
    else:
        console.print(
            f"document Q&A: {m['kept']} pairs kept of {m['pairs_parsed']} parsed from {m['chunks']} chunks of "
            f"{m['documents']} documents ({m['malformed']} malformed, {m['dropped_duplicate']} duplicates, "
            f"{m['dropped_near_duplicate']} near duplicates, {m['dropped_unsupported']} unsupported)"
        )


# -- training ------------------------------------------------------------------------------------------------------


def _finetune_traces(run: Run, name: str) -> Path | None:
    """The synthetic traces a fine-tune reads, if any (the teacher's, unless it learns the gold reasoning)."""
    settings = getattr(run.cfg.finetune, name)
    return run.synth_dir("traces") if settings.target == "reasoning" and settings.reasoning != "gold" else None


def finetune_inputs(run: Run, name: str) -> list[Path]:
    traces = _finetune_traces(run, name)
    return [run.data_dir, *run.stage_of(getattr(run.cfg.finetune, name).model), *([traces] if traces else [])]


def finetune(run: Run, name: str) -> Job:
    from pseudocot.train import finetune as lora

    settings = getattr(run.cfg.finetune, name)
    model, traces = run.resolve_model(settings.model), _finetune_traces(run, name)
    return Job(
        {"finetune": training_key(settings), "protocol": run.cfg.protocol},
        lambda out: lora.finetune(name, settings, model, run.data_dir, out, traces),
        memory=partial(_training_estimate, settings, model),
    )


def _distill_teacher(run: Run, hop: str) -> Path:
    """The stage directory of a hop's teacher: the teacher's fine-tune, or the mid model."""
    return run.finetune_dir("teacher") if hop == "mid" else run.out("distill", "mid")


def distill_inputs(run: Run, hop: str) -> list[Path]:
    return [_distill_teacher(run, hop), *run.stage_of(getattr(run.cfg.distill, hop).student)]


def distill(run: Run, hop: str) -> Job:
    from pseudocot.train import distill as hops

    settings = getattr(run.cfg.distill, hop)
    source = _distill_teacher(run, hop)
    teacher = source / "merged" if hop == "mid" else source
    student = run.resolve_model(settings.student)

    def work(out: Path) -> dict:
        # A cached teacher top-k is keyed by what it was computed from, not by where it lies.
        key = {"teacher": manifest_hash(source), "data": manifest_hash(run.data_dir)}
        return hops.distill(hop, settings, str(teacher), student, run.data_dir, out, run.topk_cache_dir(hop), key)

    online = settings.teacher_logits == "online" and settings.alpha < 1  # the teacher runs beside the student
    memory = partial(_training_estimate, settings, student, str(teacher) if online else None)
    return Job({"distill": training_key(settings), "protocol": run.cfg.protocol}, work, memory=memory)


def router_inputs(run: Run, part: str) -> list[Path]:
    return [run.data_dir, *run.stage_of(run.cfg.router.base), *run.stage_of(run.cfg.router.ttm)]


def rollout_regime(cfg: PseudoCoTConfig) -> tuple[str, str]:
    """The answer mode and the decoding preset (``eval`` or ``base``) of the router's rollouts: the router's own
    settings, else the evaluation's answer mode (score without an evaluation) and its decoding."""
    router = cfg.router
    return router.answer_mode or (cfg.eval.answer_mode if cfg.eval else "score"), router.preset or "eval"


def router(run: Run, part: str) -> Job:
    from pseudocot.records import read_jsonl
    from pseudocot.train.router import train_router

    cfg = run.cfg.router
    base, ttm = run.resolve_model(cfg.base), run.resolve_model(cfg.ttm)
    mode, preset = rollout_regime(run.cfg)
    answer_preset, ttm_preset = getattr(run.cfg.decoding, preset), run.cfg.decoding.ttm

    def work(out: Path) -> dict:
        validation = list(read_jsonl(run.data_dir / "validation.jsonl"))
        if cfg.split == "validation":
            if cfg.train_questions is None or cfg.train_questions >= len(validation):
                raise PseudoCoTError(
                    f"router.split is validation, so router.train_questions must leave some of its "
                    f"{len(validation)} questions for calibration; set it below that."
                )
            train, validation = validation[: cfg.train_questions], validation[cfg.train_questions :]
        else:
            train = list(read_jsonl(run.data_dir / "train.jsonl"))
        args = (cfg, run.cfg.protocol, run.cfg.decoding, base, ttm, train, validation, out, run.system_dir)
        return train_router(*args, answer_mode=mode, answer_preset=answer_preset)

    beams = max(answer_preset.num_beams, ttm_preset.num_beams)
    think = (cfg.max_thoughts, answer_preset.max_new_tokens, ttm_preset.max_new_tokens)
    memory = partial(_loop_estimate, [base, ttm], cfg.batch_size, beams, *think, LOOP_BATCHES)
    section = {"router": cfg, "protocol": run.cfg.protocol, "decoding": run.cfg.decoding}
    # Scored options never read the preset of written answers: a scoring router's key is the one it had before
    # the regime was a setting, so its output stays up to date.
    if mode == "generate":
        section["rollouts"] = {"answer_mode": mode, "preset": preset}
    return Job(section, work, memory=memory)


# -- the system's answers and the evaluation -----------------------------------------------------------------------


def _answer_source(run: Run, split: str) -> Path:
    """The split's questions: the world's, or the data stage's without a world."""
    return run.world_dir / f"{split}.jsonl" if run.cfg.world else run.data_dir / f"{split}.jsonl"


def answer_inputs(run: Run, split: str) -> list[Path]:
    return [run.system_dir, _answer_source(run, split).parent]


def answer(run: Run, split: str) -> Job:
    from pseudocot.eval.answer import answer_split
    from pseudocot.infer.system import PseudoCoT
    from pseudocot.records import read_jsonl

    world, source = run.cfg.world, _answer_source(run, split)
    if not source.is_file():
        raise PseudoCoTError(f"there is no {split} split at {source}; use train, validation or test.")

    def work(out: Path) -> dict:
        records = [r for r in read_jsonl(source) if r.choices]
        system = PseudoCoT.load(run.system_dir)
        if system.regime_note():
            console.print(f"[yellow]answers: {system.regime_note()} (router.preset: base trains it in this one).[/]")
        easy, hard = (world.easy_max_steps, world.hard_min_steps) if world else (None, None)
        return answer_split(system, records, easy, hard, out)

    def memory() -> Estimate:
        models, thoughts, thought = _system_models(run.system_dir)
        spec = json.loads((run.system_dir / "system.json").read_text())
        presets = spec["base_preset"], spec["ttm_preset"]
        beams = max(p["num_beams"] for p in presets)
        return _loop_estimate(
            models, ANSWER_BATCH, beams, thoughts, presets[0]["max_new_tokens"], thought, LOOP_BATCHES
        )

    return Job({"split": split}, work, memory=memory)


def _eval_sources(run: Run) -> list:
    from pseudocot.eval.benchmarks import benchmark_source

    return [benchmark_source(b, run.cfg.eval.mmlu_dir) for b in run.cfg.eval.benchmarks]  # unknown names fail here


def eval_inputs(run: Run, part: str) -> list[Path]:
    systems = run.eval_systems()
    uses_world = any(s.kind == "tiny" for s in _eval_sources(run))
    uses_system = any(s.kind == "pseudo_cot" and not s.system for s in systems)
    inputs = [*([run.world_dir] if uses_world else []), *([run.system_dir] if uses_system else [])]
    inputs += list(dict.fromkeys(d for s in systems if s.model for d in run.stage_of(s.model)))
    return inputs + [Path(s.system) for s in systems if s.system]


def evaluation(run: Run, part: str) -> Job:
    from pseudocot.data.loaders import source_files
    from pseudocot.eval.benchmarks import load_benchmark
    from pseudocot.eval.harness import evaluate
    from pseudocot.eval.report import summarize, write_report
    from pseudocot.infer.answer_modes import OPTION_SCORE

    cfg, protocol, decoding = run.cfg.eval, run.cfg.protocol, run.cfg.decoding.eval
    systems, sources, inputs = run.eval_systems(), _eval_sources(run), eval_inputs(run, part)
    world = run.world_dir if any(s.kind == "tiny" for s in sources) else None
    own_files = {
        b: source_files(s, cfg.split) if s.kind.startswith("mmlu") else []
        for b, s in zip(cfg.benchmarks, sources, strict=True)
    }
    files = [f for fs in own_files.values() for f in fs]

    def work(out: Path) -> dict:
        benchmarks = {b: load_benchmark(b, cfg.split, cfg.mmlu_dir, world, cfg.limit) for b in cfg.benchmarks}
        # Finished runs are kept, keyed by what decides them, so a crash, another baseline or
        # bootstrap, or a new row reruns only what changed.
        # A benchmark's files key only its own runs (where they live does not), so adding MMLU to a finished
        # run evaluates MMLU alone.
        context = {
            "eval": cfg.model_dump(mode="json", include={"split", "limit", "answer_mode", "batch_size"}),
            "protocol": protocol.model_dump(mode="json"),
            "decoding": decoding.model_dump(mode="json"),
            "inputs": sorted(input_hash(p) for p in inputs),
            "option_score": OPTION_SCORE,
        }
        own = {b: {"files": sorted(file_hash(f) for f in fs)} for b, fs in own_files.items() if fs}
        cache = run.root / "cache" / "eval"
        cache.mkdir(parents=True, exist_ok=True)
        evaluation = evaluate(
            systems,
            benchmarks,
            cfg,
            protocol,
            decoding,
            run.resolve_model,
            str(run.system_dir),
            cache,
            context,
            reuse=not run.restart,  # --restart runs every system again; --force only rewrites the report
            benchmark_context=own,
        )
        rows = summarize(evaluation, cfg.baseline, cfg.bootstrap_samples, cfg.seed)
        config = {"eval": cfg.model_dump(mode="json"), "protocol": protocol.model_dump(mode="json")}
        return {"files": write_report(out, evaluation, rows, config), "summary": rows}

    systems_data = [s.model_dump(mode="json") for s in systems]
    section = {"eval": cfg, "systems": systems_data, "protocol": protocol, "decoding": decoding}
    return Job(section, work, files, partial(_eval_estimate, run))


def _eval_estimate(run: Run) -> Estimate:
    """The evaluation's largest row: its models loaded together, answering a batch in the eval decoding."""
    preset, estimates = run.cfg.decoding.eval, []
    for spec in run.eval_systems():
        if spec.kind == "pseudo_cot":
            base = run.resolve_model(spec.model) if spec.model else None
            models, thoughts, thought = _system_models(Path(spec.system or run.system_dir), base)
        else:
            models, thoughts, thought = [run.resolve_model(spec.model)], int(spec.kind == "cot"), preset.max_new_tokens
        think = (thoughts, preset.max_new_tokens, thought)
        estimates.append(_loop_estimate(models, run.cfg.eval.batch_size, preset.num_beams, *think, LOOP_BATCHES))
    return max(estimates, key=lambda e: e.total)


def show_probe(run: Run, result: StageResult) -> None:
    print_probe(result.metrics["accuracy"], run.cfg)


def show_router(run: Run, result: StageResult) -> None:
    print_routing(result.metrics)


def show_answer(run: Run, result: StageResult) -> None:
    print_answers(result.metrics, result.out_dir.name)


def show_eval(run: Run, result: StageResult) -> None:
    from pseudocot.eval.report import print_table

    if is_main_process():
        print_table(result.metrics["summary"], list(run.cfg.eval.benchmarks))
        console.print(f"report: {result.out_dir / 'report.md'} (figures beside it)")
