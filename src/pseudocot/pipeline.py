"""The stage graph: each stage's inputs, output directory and runner, run in order by ``pseudocot run``.

Every stage writes through :func:`pseudocot.stage.run_stage`, so a finished, up-to-date stage is
skipped and an interrupted one leaves nothing that looks finished. Layout under ``run_dir``::

    world/          tiny world: splits, tokenizer, corpus
    zoo/<name>/     zoo models (Hugging Face format)
    probe/          zoo probe: direct vs gold-explanation accuracy
    data/           merged, chat-formatted reasoning and task sets
    finetune/NAME/  LoRA adapter and merged weights of the base (task set) or teacher (reasoning)
    distill/mid/    the mid model distilled from the fine-tuned teacher
    distill/ttm/    the Tiny Thought Model distilled from the mid model
    system/         the pseudo-CoT system: base and TTM references, the trained router
    answers/SPLIT/  the system's answers to a split (test by default), with thoughts, scores and cost
    eval/           the evaluation report: table, per-item outputs, figures
    synth/traces/   accepted reasoning traces of the large model, with acceptance counts
    synth/qa/       question-answer pairs written from a folder of documents, with provenance
    cache/          reusable intermediate results (the teachers' top-k log-probabilities, finished
                    evaluation runs)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from rich.table import Table

from pseudocot.config import PseudoCoTConfig
from pseudocot.data.build import form_data
from pseudocot.errors import PseudoCoTError
from pseudocot.progress import console
from pseudocot.stage import (
    StageResult,
    file_hash,
    input_hash,
    is_main_process,
    manifest_hash,
    run_stage,
    stage_key,
)


def _report(name: str, result: StageResult) -> StageResult:
    if not is_main_process():
        return result
    if result.skipped:
        console.print(f"[dim]{name}: up to date in {result.out_dir}, skipped (--force reruns it)[/]")
        if result.note:
            console.print(f"[dim]{name}: {result.note}[/]")
    else:
        console.print(f"[green]{name}[/]: done in {result.manifest['wall_time_s']:.1f} s -> {result.out_dir}")
    return result


def _require(section: object, name: str) -> None:
    if section is None:
        raise PseudoCoTError(f"the config has no {name} section; add one (see configs/tiny.yaml).")


class Pipeline:
    """The stages of one configuration, with the paths that connect them."""

    def __init__(self, cfg: PseudoCoTConfig, force: bool = False, restart: bool = False) -> None:
        """``force`` reruns stages that are up to date, resuming what a killed run of the same
        configuration left; ``restart`` reruns them from scratch (see :func:`run_stage`)."""
        self.cfg = cfg
        self.force = force
        self.restart = restart
        self.root = Path(cfg.run_dir)

    def _run_stage(
        self,
        stage: str,
        out_dir: Path,
        section: object,
        inputs: list[Path],
        work: Callable[[Path], dict | None],
        files: list[Path] | tuple = (),
    ) -> StageResult:
        """:func:`run_stage` with this pipeline's ``force`` and ``restart``."""
        return run_stage(stage, out_dir, section, inputs, work, self.force, files, self.restart)

    @property
    def world_dir(self) -> Path:
        """Output of the world stage."""
        return self.root / "world"

    def zoo_dir(self, name: str) -> Path:
        """Output of one zoo model."""
        return self.root / "zoo" / name

    def resolve_model(self, ref: str) -> str:
        """A model reference as a path or hub id: ``zoo:NAME`` names a model of this run's zoo,
        ``finetune:NAME`` a fine-tune's merged weights, ``distill:NAME`` a distilled student."""
        if ref.startswith("zoo:"):
            name = ref.removeprefix("zoo:")
            if self.cfg.zoo is None or name not in self.cfg.zoo.models:
                raise PseudoCoTError(f"model {ref!r} is not in the zoo section; use one of its model names.")
            return str(self.zoo_dir(name))
        if ref.startswith("finetune:"):
            return str(self.finetune_dir(ref.removeprefix("finetune:")) / "merged")
        if ref.startswith("distill:"):
            return str(self.root / "distill" / ref.removeprefix("distill:"))
        return ref

    def stage_of(self, ref: str) -> Path | None:
        """The directory that keys a later stage on a model reference: the stage directory it comes from
        (by its manifest), or a local model directory (by its content, so replacing the model reruns
        what used it); None for a hub id, which its id in the config keys."""
        if ref.startswith("finetune:"):
            return self.finetune_dir(ref.removeprefix("finetune:"))
        if ref.startswith(("zoo:", "distill:")):
            return Path(self.resolve_model(ref))
        return Path(ref) if Path(ref).is_dir() else None

    # -- stages -------------------------------------------------------------------------------

    def world(self) -> StageResult:
        """Generates the tiny world's splits, tokenizer and corpus."""
        from pseudocot.world.build import WORLD_FORMAT, build_world

        _require(self.cfg.world, "world")
        world, protocol = self.cfg.world, self.cfg.protocol
        # The generators' format keys the output too: a world written by older generators is rebuilt.
        section = {"world": world, "protocol": protocol, "format": WORLD_FORMAT}
        result = self._run_stage("world", self.world_dir, section, [], lambda out: build_world(world, protocol, out))
        return _report("world", result)

    def zoo(self) -> list[StageResult]:
        """Pretrains every zoo model that is not up to date (each role's corpus is tokenized once)."""
        from pseudocot.world.zoo import PackedBlocks, copy_snapshot, pretrain, read_corpus, snapshot_matches

        _require(self.cfg.zoo, "zoo")
        zoo = self.cfg.zoo
        blocks: dict[str, PackedBlocks] = {}

        def work(name: str) -> Callable[[Path], dict]:
            def _work(out: Path) -> dict:
                role = zoo.models[name].corpus
                if role not in blocks:
                    from pseudocot.models import load_tokenizer

                    tokenizer = load_tokenizer(self.world_dir / "tokenizer")
                    blocks[role] = PackedBlocks(read_corpus(self.world_dir, role), tokenizer, zoo.block_size)
                return pretrain(name, zoo.models[name], zoo, self.world_dir, out, blocks[role])

            return _work

        results = []
        for name, model in zoo.models.items():
            # Neither how often it checkpoints nor where a snapshot lies changes the model: neither keys it.
            section = {"model": model, "zoo": zoo.model_dump(mode="json", exclude={"models", "save_steps", "snapshot"})}
            run = work(name)
            if zoo.snapshot is not None:
                snapshot = Path(zoo.snapshot) / name
                if snapshot_matches(snapshot, stage_key("zoo", section, [self.world_dir]), self.world_dir):
                    run = partial(copy_snapshot, snapshot)
                elif is_main_process():
                    why = "was not built for this config and world" if snapshot.exists() else "does not exist"
                    console.print(f"zoo {name}: the snapshot {snapshot} {why}; pretraining it.")
            result = self._run_stage("zoo", self.zoo_dir(name), section, [self.world_dir], run)
            results.append(_report(f"zoo {name}", result))
        return results

    def snapshot_zoo(self) -> list[Path]:
        """Copies every built zoo model into ``zoo.snapshot`` (see :mod:`pseudocot.world.zoo`)."""
        from pseudocot.world.zoo import write_snapshot

        _require(self.cfg.zoo, "zoo")
        if self.cfg.zoo.snapshot is None:
            raise PseudoCoTError(
                "zoo.snapshot is not set; name the directory to write, e.g. zoo.snapshot=snapshots/tiny-zoo."
            )
        written = []
        for name in self.cfg.zoo.models:
            out = Path(self.cfg.zoo.snapshot) / name
            write_snapshot(self.zoo_dir(name), out)
            console.print(f"zoo {name}: snapshot written to {out}")
            written.append(out)
        return written

    def probe(self) -> StageResult:
        """Measures every zoo model directly and with the gold explanation in context."""
        from pseudocot.world.build import world_split
        from pseudocot.world.probe import probe_model

        _require(self.cfg.probe, "probe")
        _require(self.cfg.zoo, "zoo")
        probe, world, protocol = self.cfg.probe, self.cfg.world, self.cfg.protocol
        names = list(self.cfg.zoo.models)

        def work(out: Path) -> dict:
            records = world_split(self.world_dir, probe.split)
            results = {
                name: probe_model(
                    self.zoo_dir(name),
                    records,
                    protocol,
                    world.easy_max_steps,
                    world.hard_min_steps,
                    probe.batch_size,
                )
                for name in names
            }
            (out / "results.json").write_text(json.dumps(results, indent=2))
            return {"split": probe.split, "items": len(records), "accuracy": results}

        section = {"probe": probe, "world": world, "protocol": protocol}
        inputs = [self.world_dir, *(self.zoo_dir(n) for n in names)]
        result = _report("probe", self._run_stage("probe", self.root / "probe", section, inputs, work))
        print_probe(result.metrics["accuracy"], self.cfg)
        return result

    def data(self) -> StageResult:
        """Forms the merged, chat-formatted reasoning and task sets."""
        _require(self.cfg.data, "data")
        data = self.cfg.data
        uses_world = self.cfg.world is not None and (
            any(s.kind == "tiny" for s in data.sources) or data.tokenizer == "world"
        )
        world_dir = self.world_dir if uses_world else None
        inputs = [world_dir] if world_dir else []
        from pseudocot.data.loaders import source_files

        protocol = self.cfg.protocol
        section = {"data": data, "protocol": protocol}
        user_files = [
            f
            for s in data.sources
            if s.kind != "tiny"
            for split in data.splits
            for f in source_files(s, split, world_dir)
        ]
        result = self._run_stage(
            "data",
            self.root / "data",
            section,
            inputs,
            lambda out: form_data(data, protocol, out, world_dir),
            user_files,
        )
        return _report("data", result)

    def finetune(self, which: list[str] | None = None) -> list[StageResult]:
        """LoRA fine-tunes of the base (task set) and the teacher (reasoning set)."""
        from pseudocot.train.finetune import finetune

        _require(self.cfg.finetune, "finetune")
        results = []
        for name in which or ["base", "teacher"]:
            run = getattr(self.cfg.finetune, name)
            model = self.resolve_model(run.model)
            inputs = [self.root / "data", *([d] if (d := self.stage_of(run.model)) else [])]
            traces = self.synth_dir("traces") if run.target == "reasoning" and run.reasoning != "gold" else None
            inputs += [traces] if traces else []
            section = {"finetune": run, "protocol": self.cfg.protocol}

            def work(out: Path, name: str = name, run=run, model: str = model, traces=traces) -> dict:
                return finetune(name, run, model, self.root / "data", out, traces)

            result = self._run_stage("finetune", self.finetune_dir(name), section, inputs, work)
            results.append(_report(f"finetune {name}", result))
        return results

    def distill(self, which: list[str] | None = None) -> list[StageResult]:
        """The two-step distillation: the fine-tuned teacher into the mid model, then mid into the TTM."""
        from pseudocot.train.distill import distill

        _require(self.cfg.distill, "distill")
        _require(self.cfg.finetune, "finetune")
        teachers = {"mid": self.finetune_dir("teacher") / "merged", "ttm": self.root / "distill" / "mid"}
        results = []
        for name in which or ["mid", "ttm"]:
            hop = getattr(self.cfg.distill, name)
            teacher, student = teachers[name], self.resolve_model(hop.student)
            stage_inputs = [teachers[name].parent if name == "mid" else teachers[name]]
            stage_inputs += [d] if (d := self.stage_of(hop.student)) else []
            section = {"distill": hop, "protocol": self.cfg.protocol}

            def work(
                out: Path,
                name: str = name,
                hop=hop,
                teacher: Path = teacher,
                student: str = student,
                source=stage_inputs[0],
            ) -> dict:
                # A cached teacher top-k is keyed by what it was computed from, not by where it lies.
                key = {"teacher": manifest_hash(source), "data": manifest_hash(self.root / "data")}
                cache = self.root / "cache" / "teacher_topk" / name
                return distill(name, hop, str(teacher), student, self.root / "data", out, cache, key)

            result = self._run_stage("distill", self.root / "distill" / name, section, stage_inputs, work)
            results.append(_report(f"distill {name}", result))
        return results

    @property
    def system_dir(self) -> Path:
        """Output of the router stage: the pseudo-CoT system."""
        return self.root / "system"

    def router(self) -> StageResult:
        """Rolls out base and TTM on the router's questions, trains and calibrates the router."""
        from pseudocot.data.records import read_jsonl
        from pseudocot.train.router import train_router

        _require(self.cfg.router, "router")
        cfg = self.cfg.router
        base, ttm = self.resolve_model(cfg.base), self.resolve_model(cfg.ttm)
        inputs = [self.root / "data", *(d for d in (self.stage_of(cfg.base), self.stage_of(cfg.ttm)) if d)]
        section = {"router": cfg, "protocol": self.cfg.protocol, "decoding": self.cfg.decoding}

        def work(out: Path) -> dict:
            validation = list(read_jsonl(self.root / "data" / "validation.jsonl"))
            if cfg.split == "validation":
                if cfg.train_questions is None or cfg.train_questions >= len(validation):
                    raise PseudoCoTError(
                        f"router.split is validation, so router.train_questions must leave some of its "
                        f"{len(validation)} questions for calibration; set it below that."
                    )
                train, validation = validation[: cfg.train_questions], validation[cfg.train_questions :]
            else:
                train = list(read_jsonl(self.root / "data" / "train.jsonl"))
            return train_router(
                cfg, self.cfg.protocol, self.cfg.decoding, base, ttm, train, validation, out, self.system_dir
            )

        result = _report("router", self._run_stage("router", self.system_dir, section, inputs, work))
        print_routing(result.metrics)
        return result

    def answer(self, split: str = "test") -> StageResult:
        """The system answers every question of a split through the loop (router policy)."""
        from pseudocot.data.records import read_jsonl
        from pseudocot.eval.answer import answer_split
        from pseudocot.infer.system import PseudoCoT

        _require(self.cfg.router, "router")
        world = self.cfg.world
        source = self.world_dir / f"{split}.jsonl" if world else self.root / "data" / f"{split}.jsonl"
        if not source.is_file():
            raise PseudoCoTError(f"there is no {split} split at {source}; use train, validation or test.")

        def work(out: Path) -> dict:
            records = [r for r in read_jsonl(source) if r.choices]
            system = PseudoCoT.load(self.system_dir)
            easy, hard = (world.easy_max_steps, world.hard_min_steps) if world else (None, None)
            return answer_split(system, records, easy, hard, out)

        section = {"split": split}
        inputs = [self.system_dir, source.parent]
        result = self._run_stage("answer", self.root / "answers" / split, section, inputs, work)
        _report(f"answer {split}", result)
        print_answers(result.metrics, split)
        return result

    def eval_systems(self) -> list:
        """The evaluation's rows: ``eval.systems``, or the paper's four from the config, then the peers."""
        from pseudocot.eval.harness import default_systems

        cfg = self.cfg.eval
        if cfg.systems:
            return [*cfg.systems, *default_systems(None, None, cfg.peers)]
        base = self.cfg.finetune.base.model if self.cfg.finetune else None
        tuned = self.cfg.router.base if self.cfg.router else ("finetune:base" if base else None)
        systems = default_systems(base, tuned, cfg.peers, with_thoughts=self.cfg.router is not None)
        if not systems:
            raise PseudoCoTError("the eval section has no systems; list eval.systems or eval.peers.")
        return systems

    def eval(self) -> StageResult:
        """Every system on every benchmark: the report (Table 5.1, intervals, tests, cost, figures)."""
        from pseudocot.data.loaders import source_files
        from pseudocot.eval.benchmarks import benchmark_source, load_benchmark
        from pseudocot.eval.harness import evaluate
        from pseudocot.eval.report import print_table, summarize, write_report

        _require(self.cfg.eval, "eval")
        cfg = self.cfg.eval
        systems = self.eval_systems()
        sources = [benchmark_source(b, cfg.mmlu_dir) for b in cfg.benchmarks]  # unknown names fail here
        world = self.world_dir if any(s.kind == "tiny" for s in sources) else None
        files = [f for s in sources if s.kind.startswith("mmlu") for f in source_files(s, cfg.split)]
        refs = [s.model for s in systems if s.model]
        uses_system = any(s.kind == "pseudo_cot" and not s.system for s in systems)
        inputs = [*([world] if world else []), *([self.system_dir] if uses_system else [])]
        inputs += list(dict.fromkeys(d for d in map(self.stage_of, refs) if d))
        inputs += [Path(s.system) for s in systems if s.system]

        def work(out: Path) -> dict:
            benchmarks = {b: load_benchmark(b, cfg.split, cfg.mmlu_dir, world, cfg.limit) for b in cfg.benchmarks}
            # Finished runs are kept, keyed by what decides them, so a crash, another baseline or
            # bootstrap, or a new row reruns only what changed.
            cache = self.root / "cache" / "eval"
            cache.mkdir(parents=True, exist_ok=True)
            context = {
                "eval": cfg.model_dump(
                    mode="json", include={"split", "limit", "answer_mode", "mmlu_dir", "batch_size"}
                ),
                "protocol": self.cfg.protocol.model_dump(mode="json"),
                "decoding": self.cfg.decoding.eval.model_dump(mode="json"),
                "inputs": sorted(input_hash(p) for p in inputs),
                "files": sorted(file_hash(f) for f in files),
            }
            evaluation = evaluate(
                systems,
                benchmarks,
                cfg,
                self.cfg.protocol,
                self.cfg.decoding.eval,
                self.resolve_model,
                str(self.system_dir),
                cache,
                context,
                reuse=not self.restart,  # --restart runs every system again; --force only rewrites the report
            )
            rows = summarize(evaluation, cfg.baseline, cfg.bootstrap_samples, cfg.seed)
            config = {"eval": cfg.model_dump(mode="json"), "protocol": self.cfg.protocol.model_dump(mode="json")}
            written = write_report(out, evaluation, rows, config)
            return {"files": written, "summary": rows}

        section = {
            "eval": cfg,
            "systems": [s.model_dump(mode="json") for s in systems],
            "protocol": self.cfg.protocol,
            "decoding": self.cfg.decoding.eval,
        }
        result = _report("eval", self._run_stage("eval", self.root / "eval", section, inputs, work, files=files))
        if is_main_process():
            print_table(result.metrics["summary"], list(cfg.benchmarks))
            console.print(f"report: {result.out_dir / 'report.md'} (figures beside it)")
        return result

    def synth_dir(self, kind: str) -> Path:
        """Output of a synth stage (``traces`` or ``qa``)."""
        return self.root / "synth" / kind

    def synth(self, which: list[str] | None = None) -> list[StageResult]:
        """Synthetic data: reasoning traces (filtered by the gold answer) and document Q&A."""
        _require(self.cfg.synth, "synth")
        results = []
        for kind in which or ["traces", "qa"]:
            if getattr(self.cfg.synth, kind) is None:
                if which:
                    raise PseudoCoTError(f"the config has no synth.{kind} section; add one (see the README).")
                continue
            results.append(self.traces() if kind == "traces" else self.qa())
        return results

    def traces(self) -> StageResult:
        """The large model samples reasoning traces; those reaching the gold answer are kept."""
        from pseudocot.data.records import read_jsonl
        from pseudocot.synth.traces import synthesize_traces

        cfg = self.cfg.synth.traces
        model = self.resolve_model(cfg.model)
        data_dir = self.root / "data"
        inputs = [data_dir, *([d] if (d := self.stage_of(cfg.model)) else [])]
        section = {"traces": cfg, "protocol": self.cfg.protocol}

        def work(out: Path) -> dict:
            split = data_dir / f"{cfg.split}.jsonl"
            if not split.is_file():
                raise PseudoCoTError(f"the data stage has no {cfg.split} split at {split}; run `pseudocot data` first.")
            records = list(read_jsonl(split))[: cfg.questions]
            return synthesize_traces(cfg, self.cfg.protocol, model, records, data_dir, out)

        result = _report("synth traces", self._run_stage("synth", self.synth_dir("traces"), section, inputs, work))
        m = result.metrics
        if is_main_process():
            console.print(
                f"traces: {m['acceptance_rate_all']:.1%} of {m['questions'] * m['samples_per_question']} samples "
                f"reached the gold answer; {m['questions_with_a_trace_all']:.1%} of {m['questions']} questions "
                f"have one; {m['accepted_traces']} distinct traces kept"
            )
        return result

    def qa(self) -> StageResult:
        """The large model writes question-answer pairs grounded in a folder of documents."""
        from pseudocot.infer.generate import generate
        from pseudocot.models import load_model, load_tokenizer
        from pseudocot.synth.qa import document_files, synthesize_qa

        cfg = self.cfg.synth.qa
        model_ref = self.resolve_model(cfg.model)
        files = document_files(cfg.documents)  # a missing folder fails before any model loads
        if not files:
            raise PseudoCoTError(f"document folder {cfg.documents} has no .txt, .md or .pdf files; add some documents.")
        inputs = [d] if (d := self.stage_of(cfg.model)) else []
        root = Path(cfg.documents)
        section = {"qa": cfg, "documents": [str(f.relative_to(root)) for f in files]}

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

        stage = self._run_stage("synth", self.synth_dir("qa"), section, inputs, work, files=files)
        result = _report("synth qa", stage)
        m = result.metrics
        if is_main_process():
            console.print(
                f"document Q&A: {m['kept']} pairs kept of {m['pairs_parsed']} parsed from {m['chunks']} chunks of "
                f"{m['documents']} documents ({m['malformed']} malformed, {m['dropped_duplicate']} duplicates, "
                f"{m['dropped_near_duplicate']} near duplicates, {m['dropped_unsupported']} unsupported)"
            )
        return result

    def finetune_dir(self, name: str) -> Path:
        """Output of one fine-tune (``base`` or ``teacher``)."""
        return self.root / "finetune" / name

    def stages(self) -> dict[str, Callable[[], object]]:
        """The stages this configuration has, in the order ``run`` executes them."""
        table: dict[str, Callable[[], object]] = {}
        if self.cfg.world is not None:
            table["world"] = self.world
        if self.cfg.zoo is not None:
            table["zoo"] = self.zoo
        if self.cfg.data is not None:
            table["data"] = self.data
        if self.cfg.probe is not None:
            table["probe"] = self.probe
        traces = self.cfg.synth.traces if self.cfg.synth else None
        synth_first = self.cfg.synth is not None and not (traces and traces.model.startswith("finetune:"))
        if synth_first:  # traces from a model of its own can feed the teacher's fine-tune
            table["synth"] = self.synth
        if self.cfg.finetune is not None:
            table["finetune"] = self.finetune
        if self.cfg.synth is not None and not synth_first:  # traces from a fine-tune come after it
            table["synth"] = self.synth
        if self.cfg.distill is not None:
            table["distill"] = self.distill
        if self.cfg.router is not None:
            table["router"] = self.router
            table["answer"] = self.answer
        if self.cfg.eval is not None:
            table["eval"] = self.eval
        return table

    def run(self, only: list[str] | None = None) -> None:
        """Runs every stage (or only the named ones) in order, then prints each stage's wall time."""
        stages = self.stages()
        unknown = [s for s in only or [] if s not in stages]
        if unknown:
            raise PseudoCoTError(f"unknown stage {unknown[0]!r}; this config has: {', '.join(stages)}.")
        table = Table("stage", "wall time", title="wall time per stage")
        for name, stage in stages.items():
            if not only or name in only:
                started = time.perf_counter()
                stage()
                table.add_row(name, f"{time.perf_counter() - started:.1f} s")
        if is_main_process():
            console.print(table)


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
