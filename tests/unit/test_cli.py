import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import typer
import yaml
from typer.testing import CliRunner

from pseudocot import __version__
from pseudocot.cli import app
from pseudocot.config import load_config
from pseudocot.graph import STAGE, STAGES
from pseudocot.pipeline import Pipeline
from pseudocot.stage import RERUN

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_version_and_help():
    assert runner.invoke(app, ["--version"]).output.strip() == f"pseudocot {__version__}"
    out = runner.invoke(app, ["--help"]).output
    for command in ("run", "world", "zoo", "data", "config"):
        assert command in out
    zoo_help = runner.invoke(app, ["zoo", "build", "--help"]).output
    assert "zoo.block_size" in zoo_help and "Tokens per packed pretraining sequence" in zoo_help


def test_every_stage_has_its_commands_and_a_rerun_hint():
    # tiny.yaml has every stage; each command the graph declares exists, says its help, lists its
    # section's fields, and is the command a damaged file of the stage names.
    stages = Pipeline(load_config(ROOT / "configs" / "tiny.yaml")).stages()
    assert sorted(stages) == sorted(STAGE) == sorted(RERUN)
    for stage in STAGES:
        for command in stage.commands:
            assert runner.invoke(app, [*command.words, "--help"]).exit_code == 0
            click_command = typer.main.get_command(app)
            for word in command.words:
                click_command = click_command.commands[word]
            assert click_command.help.startswith(command.help)
            assert command.fields is None or f"\n\n{command.fields}." in click_command.help
            words = ["{name}" if word == command.part else word for word in command.words]
            choice = [stage.choice.flag, "{name}"] if stage.choice else []
            assert RERUN[stage.name] == " ".join([*words, "CONFIG", *choice])
            assert not stage.choice or any(stage.choice.flag in p.opts for p in click_command.params)


def test_a_stage_runs_after_the_stages_it_reads():
    tiny = ROOT / "configs" / "tiny.yaml"
    assert Pipeline(load_config(tiny)).stages().index("finetune") < Pipeline(load_config(tiny)).stages().index("synth")
    own = Pipeline(load_config(tiny, ["synth.traces.model=zoo:tiny-8b", "finetune.teacher.reasoning=both"]))
    assert own.stages() == ["world", "zoo", "data", "probe", "synth", "finetune", "distill", "router", "answer", "eval"]


def test_bad_config_is_one_sentence_exit_2_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pseudocot", "run", str(ROOT / "configs" / "tiny.yaml"), "zoo.block_size=-4"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "tiny.yaml (with overrides): 'zoo.block_size': Input should be greater than or equal to 16." in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_unknown_stage_and_missing_config(tmp_path):
    result = runner.invoke(app, ["run", str(ROOT / "configs" / "tiny.yaml"), "--only", "wrld"])
    assert result.exit_code == 1 and "unknown stage 'wrld'" in result.output
    result = runner.invoke(app, ["data", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_config_show_and_fields():
    out = runner.invoke(app, ["config", "show", str(ROOT / "configs" / "paper.yaml"), "router.max_thoughts=5"]).output
    assert "max_thoughts: 5" in out and "meta-llama/Llama-3.2-1B-Instruct" in out
    # The paper's reasoning set has sources: hub reasoning datasets whose worked solutions are the reasoning.
    sources = yaml.safe_load(out)["data"]["sources"]
    assert {s["path"] for s in sources if "reasoning" in s.get("fields", {})} >= {
        "openai/gsm8k",
        "meta-math/MetaMathQA",
    }
    assert not any(s["path"] == "cais/mmlu" for s in sources)  # the base's task set is not MMLU's dev split
    out = runner.invoke(app, ["config", "fields", "distill"]).output
    assert "divergence" in out


def _one_line_error(result) -> str:
    """The single line a user-caused error prints (no traceback, no usage box)."""
    lines = result.output.strip().splitlines()
    assert result.exit_code != 0 and len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].startswith("error: ")
    return lines[0]


def test_importing_the_cli_loads_no_torch():
    # --help and --version must not pay for torch, transformers or the pipeline (seconds of imports).
    heavy = ["torch", "transformers", "peft", "pseudocot.pipeline"]
    code = f"import sys, pseudocot.cli; print([m for m in {heavy!r} if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_damaged_and_empty_configs_are_one_line_naming_the_file(tmp_path):
    binary, empty, stageless = tmp_path / "binary.yaml", tmp_path / "empty.yaml", tmp_path / "stageless.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    empty.write_text("")
    stageless.write_text("run_dir: out\n")
    for command in ("run", "data"):
        assert str(binary) in _one_line_error(runner.invoke(app, [command, str(binary)]))
    assert f"{empty} is empty" in _one_line_error(runner.invoke(app, ["run", str(empty)]))
    assert f"{stageless} has no stage section" in _one_line_error(
        runner.invoke(app, ["config", "show", str(stageless)])
    )


def test_config_fields_of_an_unknown_section_lists_the_sections():
    line = _one_line_error(runner.invoke(app, ["config", "fields", "bogus"]))
    assert "no config section or key 'bogus'; the sections are protocol, world, zoo," in line


def test_policy_out_of_range_is_refused_before_loading(tmp_path):
    for policy, message in [("random:2", "must be in [0, 1]"), ("entropy:-1", ">= 0"), ("sometimes", "unknown policy")]:
        for argv in (["ask", "q"], ["chat"]):
            line = _one_line_error(runner.invoke(app, [*argv, "--system", str(tmp_path), "--policy", policy]))
            assert f"policy {policy!r}" in line and message in line


def test_max_thoughts_is_bounded_by_the_systems_own(tmp_path, monkeypatch):
    from pseudocot.infer.system import PseudoCoT

    monkeypatch.setattr(PseudoCoT, "load", lambda system: SimpleNamespace(max_thoughts=2))
    for argv in (["ask", "q"], ["chat"]):
        line = _one_line_error(runner.invoke(app, [*argv, "--system", str(tmp_path), "--max-thoughts", "50"]))
        assert f"--max-thoughts 50 is more than the 2 the system at {tmp_path} was built for" in line
