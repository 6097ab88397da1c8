"""The stage graph, declared once: each stage's name, config sections, output directory, inputs, runner and
CLI commands. ``pseudocot run`` (:mod:`pseudocot.pipeline`), the per-stage commands (:mod:`pseudocot.cli`)
and their test are all read off :data:`STAGES`.

Layout under ``run_dir`` (each stage's ``out``)::

    world/          tiny world: splits, tokenizer, corpus
    zoo/<name>/     zoo models (Hugging Face format)
    probe/          zoo probe: direct vs gold-explanation accuracy
    data/           merged, chat-formatted reasoning and task sets
    synth/traces/   accepted reasoning traces of the large model, with acceptance counts
    synth/qa/       question-answer pairs written from a folder of documents, with provenance
    finetune/NAME/  LoRA adapter and merged weights of the base (task set) or teacher (reasoning)
    distill/mid/    the mid model distilled from the fine-tuned teacher
    distill/ttm/    the Tiny Thought Model distilled from the mid model
    system/         the pseudo-CoT system: base and TTM references, the trained router
    answers/SPLIT/  the system's answers to a split (test by default), with thoughts, scores and cost
    eval/           the evaluation report: table, per-item outputs, figures
    cache/          reusable intermediate results (the teachers' top-k log-probabilities, finished
                    evaluation runs)

The order ``run`` takes is the table's, except that a stage comes after every stage whose output it
reads: traces written by a fine-tune of this run come after the fine-tunes, traces written by another
model come before them, so that they can feed the teacher's.

Importing this module is cheap (the CLI reads it at start-up): runners import what they run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pseudocot import runners
from pseudocot.config import PseudoCoTConfig
from pseudocot.errors import PseudoCoTError
from pseudocot.runners import Job
from pseudocot.stage import StageResult


class Run:
    """One configuration's run directory: where each stage writes and what a model reference names."""

    def __init__(self, cfg: PseudoCoTConfig, restart: bool = False) -> None:
        """``restart``: stages rerun from scratch (the evaluation reruns every system, not only its report)."""
        self.cfg = cfg
        self.root = Path(cfg.run_dir)
        self.restart = restart
        self.memo: dict[str, Any] = {}  # what the parts of one stage share (the zoo's tokenized corpora)

    def out(self, stage: str, part: str = "") -> Path:
        """Output directory of one part of a stage."""
        return self.root / STAGE[stage].out.format(part=part)

    @property
    def world_dir(self) -> Path:
        """Output of the world stage."""
        return self.out("world")

    @property
    def data_dir(self) -> Path:
        """Output of the data stage."""
        return self.out("data")

    @property
    def system_dir(self) -> Path:
        """Output of the router stage: the pseudo-CoT system."""
        return self.out("router")

    def zoo_dir(self, name: str) -> Path:
        """Output of one zoo model."""
        return self.out("zoo", name)

    def finetune_dir(self, name: str) -> Path:
        """Output of one fine-tune (``base`` or ``teacher``)."""
        return self.out("finetune", name)

    def topk_cache_dir(self, hop: str) -> Path:
        """Where the cached teacher top-k of a distillation hop (``mid`` or ``ttm``) lies."""
        return self.root / "cache" / "teacher_topk" / hop

    def synth_dir(self, kind: str) -> Path:
        """Output of a synth stage (``traces`` or ``qa``)."""
        return self.out("synth", kind)

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
            return str(self.out("distill", ref.removeprefix("distill:")))
        return ref

    def stage_of(self, ref: str) -> list[Path]:
        """The directory that keys a later stage on a model reference: the stage directory it comes from
        (by its manifest), or a local model directory (by its content, so replacing the model reruns
        what used it); none for a hub id, which its id in the config keys."""
        if ref.startswith("finetune:"):
            return [self.finetune_dir(ref.removeprefix("finetune:"))]
        if ref.startswith(("zoo:", "distill:")):
            return [Path(self.resolve_model(ref))]
        return [Path(ref)] if Path(ref).is_dir() else []

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


@dataclass(frozen=True)
class Command:
    """A CLI command that runs a stage: its words, its help (the config fields of ``fields`` appended)."""

    words: tuple[str, ...]
    help: str
    fields: str | None = None
    part: str | None = None  # the one part it runs (``synth traces``); None: the stage's option decides


@dataclass(frozen=True)
class Choice:
    """The command-line option that picks one part of a stage (``--which``, ``--split``)."""

    flag: str
    help: str
    choices: tuple[str, ...] = ()  # empty: any value, checked by the stage
    default: str | None = None


@dataclass(frozen=True)
class Stage:
    """One stage of the graph."""

    name: str  # what ``run --only`` takes and the manifest records
    job: Callable[[Run, str], Job]
    inputs: Callable[[Run, str], list[Path]]  # stage outputs and model directories one part reads
    commands: tuple[Command, ...]
    # The parts ``run`` runs ("" for one output); default: the choice's fixed values, else one output.
    parts: Callable[[PseudoCoTConfig], list[str]] | None = None
    # Config sections it needs (default: the stage's own); the config has the stage when it has the first.
    needs: tuple[str, ...] = ()
    out: str = ""  # output directory under run_dir, ``{part}`` the part's name (default: name, or name/{part})
    choice: Choice | None = None
    show: Callable[[Run, StageResult], None] | None = None  # prints what the stage found

    def __post_init__(self) -> None:
        object.__setattr__(self, "needs", self.needs or (self.name,))
        if self.parts is None:
            fixed = list(self.choice.choices) if self.choice else []
            object.__setattr__(self, "parts", (lambda cfg: fixed) if fixed else runners.one_part)
        default_out = self.name if self.parts is runners.one_part else f"{self.name}/{{part}}"
        object.__setattr__(self, "out", self.out or default_out)


# -- the graph ----------------------------------------------------------------------------------------------------

STAGES: tuple[Stage, ...] = (
    Stage(
        "world",
        runners.world,
        runners.no_inputs,
        (Command(("world", "build"), "Generate the tiny world's splits, tokenizer and corpus.", "world"),),
    ),
    Stage(
        "zoo",
        runners.zoo,
        runners.zoo_inputs,
        (Command(("zoo", "build"), "Pretrain the zoo's Llama models from scratch.", "zoo"),),
        parts=lambda cfg: list(cfg.zoo.models),
    ),
    Stage(
        "data",
        runners.data,
        runners.data_inputs,
        (Command(("data",), "Merge the sources and chat-format the reasoning and task sets.", "data"),),
    ),
    Stage(
        "probe",
        runners.probe,
        runners.probe_inputs,
        (Command(("zoo", "probe"), "Accuracy of each zoo model directly and with the gold explanation.", "probe"),),
        needs=("probe", "zoo"),
        show=runners.show_probe,
    ),
    Stage(
        "synth",
        runners.synth,
        runners.synth_inputs,
        (
            Command(
                ("synth", "traces"),
                "The large model samples k reasoning traces per question; those reaching the gold answer are kept.",
                "synth.traces",
                part="traces",
            ),
            Command(
                ("synth", "qa"),
                "Question-answer pairs grounded in a folder of documents, deduplicated and checked against their "
                "chunk.",
                "synth.qa",
                part="qa",
            ),
        ),
        parts=runners.synth_parts,
        show=runners.show_synth,
    ),
    Stage(
        "finetune",
        runners.finetune,
        runners.finetune_inputs,
        (Command(("finetune",), "LoRA fine-tune the base (task set) and the teacher (reasoning set).", "finetune"),),
        choice=Choice("--which", "Only 'base' or only 'teacher'.", ("base", "teacher")),
    ),
    Stage(
        "distill",
        runners.distill,
        runners.distill_inputs,
        (Command(("distill",), "Two-step distillation: teacher -> mid -> TTM.", "distill"),),
        needs=("distill", "finetune"),
        choice=Choice("--which", "Only the 'mid' hop or only the 'ttm' hop.", ("mid", "ttm")),
    ),
    Stage(
        "router",
        runners.router,
        runners.router_inputs,
        (Command(("router",), "Roll out base and TTM, train and calibrate the router, write the system.", "router"),),
        out="system",
        show=runners.show_router,
    ),
    Stage(
        "answer",
        runners.answer,
        runners.answer_inputs,
        (Command(("answer",), "The system answers a split: answers, thoughts, scores and cost per question."),),
        parts=lambda cfg: ["test"],
        needs=("router",),
        out="answers/{part}",
        choice=Choice("--split", "train, validation or test.", default="test"),
        show=runners.show_answer,
    ),
    Stage(
        "eval",
        runners.evaluation,
        runners.eval_inputs,
        (Command(("eval",), "Evaluate systems: Table 5.1 with intervals, paired tests, cost and figures.", "eval"),),
        show=runners.show_eval,
    ),
)
STAGE = {stage.name: stage for stage in STAGES}


def present(cfg: PseudoCoTConfig) -> list[Stage]:
    """The stages the configuration has, in the table's order."""
    return [s for s in STAGES if getattr(cfg, s.needs[0]) is not None]


def stages_of(run: Run) -> list[Stage]:
    """The stages the configuration has, in the order ``run`` executes them: the table's order, each stage
    after the stages whose outputs it reads."""
    stages = present(run.cfg)
    tops = {s.name: run.root / s.out.split("{")[0] for s in stages}
    reads = {
        s.name: {
            other
            for part in s.parts(run.cfg)
            for path in s.inputs(run, part)
            for other, top in tops.items()
            if other != s.name and path.is_relative_to(top)
        }
        for s in stages
    }
    ordered: list[Stage] = []
    while len(ordered) < len(stages):
        done = {s.name for s in ordered}
        ready = [s for s in stages if s.name not in done and reads[s.name] <= done]
        if not ready:
            cycle = ", ".join(s.name for s in stages if s.name not in done)
            raise PseudoCoTError(f"the stages {cycle} read each other's outputs; change their model references.")
        ordered.append(ready[0])
    return ordered
