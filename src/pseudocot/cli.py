"""The ``pseudocot`` command line: one table of subcommands, one per stage.

    pseudocot run configs/tiny.yaml                  every stage in order (skips what is up to date)
    pseudocot world build configs/tiny.yaml          the tiny world: splits, tokenizer, corpus
    pseudocot zoo build configs/tiny.yaml            pretrain the zoo
    pseudocot zoo probe configs/tiny.yaml            direct vs gold-explanation accuracy of the zoo
    pseudocot data configs/tiny.yaml                 merge and chat-format the reasoning and task sets
    pseudocot config show configs/paper.yaml         the resolved configuration
    pseudocot config fields [SECTION]                every config key with its description

Any command taking a CONFIG also takes dotted overrides after it: ``zoo.seed=3``.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from typing import Annotated

import typer
import yaml
from rich.table import Table

from pseudocot import __version__
from pseudocot.config import PseudoCoTConfig, field_help, load_config
from pseudocot.errors import PseudoCoTError
from pseudocot.progress import console

app = typer.Typer(help="Pseudo Chain-of-Thought induced fine-tuning.", no_args_is_help=True, add_completion=False)
world_app = typer.Typer(help="The built-in tiny world.", no_args_is_help=True)
zoo_app = typer.Typer(help="The tiny world's model zoo.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect configurations.", no_args_is_help=True)
app.add_typer(world_app, name="world")
app.add_typer(zoo_app, name="zoo")
app.add_typer(config_app, name="config")

ConfigArg = Annotated[str, typer.Argument(help="YAML config, e.g. configs/tiny.yaml.")]
Overrides = Annotated[list[str] | None, typer.Argument(help="Dotted overrides, e.g. zoo.seed=3.")]
Force = Annotated[bool, typer.Option("--force", help="Rerun stages whose output is up to date.")]


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
            console.print("[yellow]interrupted[/]: rerun the same command to resume; finished stages are kept.")
            raise typer.Exit(130) from None

    return wrapper


def _pipeline(config: str, overrides: list[str] | None, force: bool):
    from pseudocot.pipeline import Pipeline

    return Pipeline(load_config(config, overrides or []), force=force)


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
    only: Annotated[str | None, typer.Option(help="Comma-separated stages to run, e.g. world,zoo.")] = None,
) -> None:
    """Run every stage of CONFIG in order, skipping stages whose output is up to date."""
    _pipeline(config, overrides, force).run(only.split(",") if only else None)


@world_app.command("build", help="Generate the tiny world's splits, tokenizer and corpus.\n\n" + _fields_help("world"))
@user_errors
def world_build(config: ConfigArg, overrides: Overrides = None, force: Force = False) -> None:
    _pipeline(config, overrides, force).world()


@zoo_app.command("build", help="Pretrain the zoo's Llama models from scratch.\n\n" + _fields_help("zoo"))
@user_errors
def zoo_build(config: ConfigArg, overrides: Overrides = None, force: Force = False) -> None:
    _pipeline(config, overrides, force).zoo()


@zoo_app.command(
    "probe", help="Accuracy of each zoo model directly and with the gold explanation.\n\n" + _fields_help("probe")
)
@user_errors
def zoo_probe(config: ConfigArg, overrides: Overrides = None, force: Force = False) -> None:
    _pipeline(config, overrides, force).probe()


@app.command(help="Merge the sources and chat-format the reasoning and task sets.\n\n" + _fields_help("data"))
@user_errors
def data(config: ConfigArg, overrides: Overrides = None, force: Force = False) -> None:
    _pipeline(config, overrides, force).data()


@app.command(help="LoRA fine-tune the base (task set) and the teacher (reasoning set).\n\n" + _fields_help("finetune"))
@user_errors
def finetune(
    config: ConfigArg,
    overrides: Overrides = None,
    force: Force = False,
    which: Annotated[str | None, typer.Option(help="Only 'base' or only 'teacher'.")] = None,
) -> None:
    if which not in (None, "base", "teacher"):
        raise PseudoCoTError(f"--which must be 'base' or 'teacher', not {which!r}.")
    _pipeline(config, overrides, force).finetune([which] if which else None)


@app.command(help="Two-step distillation: teacher -> mid -> TTM.\n\n" + _fields_help("distill"))
@user_errors
def distill(
    config: ConfigArg,
    overrides: Overrides = None,
    force: Force = False,
    which: Annotated[str | None, typer.Option(help="Only the 'mid' hop or only the 'ttm' hop.")] = None,
) -> None:
    if which not in (None, "mid", "ttm"):
        raise PseudoCoTError(f"--which must be 'mid' or 'ttm', not {which!r}.")
    _pipeline(config, overrides, force).distill([which] if which else None)


@config_app.command("show")
@user_errors
def config_show(config: ConfigArg, overrides: Overrides = None) -> None:
    """Print CONFIG resolved: defaults filled in, overrides applied, validated."""
    cfg = load_config(config, overrides or [])
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True), sort_keys=False))


@config_app.command("fields")
def config_fields(section: Annotated[str | None, typer.Argument(help="Only keys under this section.")] = None) -> None:
    """List every configuration key with its type and description."""
    table = Table("key", "type", "description")
    for key, kind, desc in field_help(PseudoCoTConfig):
        if section is None or key == section or key.startswith(section + "."):
            table.add_row(key, kind, desc)
    console.print(table)


def entrypoint() -> None:
    """Console-script entry point."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # rich bars only; no tqdm bar per saved shard
    # Raised inside PEFT on every LoRA run; nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    sys.exit(app())
