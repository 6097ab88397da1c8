"""A damaged file a stage reads back (weights, router, system.json) is one sentence naming it and the
command that rewrites it, raised as PseudoCoTError; the CLI prints it as one line, no traceback."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from pseudocot.cli import app
from pseudocot.errors import PseudoCoTError
from pseudocot.infer.router import ROUTER_WEIGHTS, Router, RouterMLP
from pseudocot.infer.system import SYSTEM_FILE, read_system
from pseudocot.models import load_model, load_tokenizer
from pseudocot.stage import RERUN, rewrite_hint

DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "garbled": lambda data: os.urandom(len(data)),
}


def _stage_dir(path, stage):
    path.mkdir(parents=True, exist_ok=True)
    (path / "manifest.json").write_text(json.dumps({"stage": stage, "config_hash": "x", "input_hashes": []}))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A zoo stage's output: a tiny seeded Llama with its manifest."""
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    out = _stage_dir(tmp_path_factory.mktemp("run") / "zoo" / "tiny", "zoo")
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


@pytest.fixture
def system_dir(tmp_path):
    """A router stage's output: system.json and the router (models are not needed to read these)."""
    out = _stage_dir(tmp_path / "system", "router")
    Router(RouterMLP(7, [4]), max_thoughts=2).save(out)
    preset = {"max_new_tokens": 8}
    spec = {"base": "b", "ttm": "t", "max_thoughts": 2, "protocol": {}, "base_preset": preset, "ttm_preset": preset}
    (out / SYSTEM_FILE).write_text(json.dumps(spec))
    return out


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_model_weights_name_the_file_and_the_command(model_dir, tmp_path, damage):
    copy = shutil.copytree(model_dir, tmp_path / "zoo" / "tiny")
    weights = copy / "model.safetensors"
    weights.write_bytes(DAMAGE[damage](weights.read_bytes()))
    with pytest.raises(PseudoCoTError) as err:
        load_model(str(copy))
    assert str(err.value) == (
        f"{weights} is damaged (truncated or not safetensors); "
        "rerun `pseudocot zoo build CONFIG --force` to rewrite it."
    )


def test_damaged_model_config_tokenizer_and_missing_weights(model_dir, tmp_path):
    copy = shutil.copytree(model_dir, tmp_path / "mine")
    (copy / "manifest.json").unlink()  # a model of one's own
    (copy / "config.json").write_text('{"model_type": "lla')
    with pytest.raises(PseudoCoTError, match=r"mine/config.json is damaged \(not JSON\); replace it with a complete"):
        load_model(copy)
    (copy / "config.json").write_text("{}")
    with pytest.raises(PseudoCoTError, match=r"config.json is damaged \(no 'model_type' key\)"):
        load_model(copy)
    shutil.copy(model_dir / "config.json", copy / "config.json")
    (copy / "model.safetensors").unlink()
    with pytest.raises(PseudoCoTError, match="mine holds no weights"):
        load_model(copy)
    (copy / "tokenizer.json").write_bytes(b"\x00\xff garbage")
    with pytest.raises(PseudoCoTError, match=r"mine/tokenizer.json is damaged \(not JSON\)"):
        load_tokenizer(copy)
    assert load_model(model_dir).num_parameters() > 0  # the intact one loads


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_router_weights(system_dir, damage):
    weights = system_dir / ROUTER_WEIGHTS
    weights.write_bytes(DAMAGE[damage](weights.read_bytes()))
    with pytest.raises(PseudoCoTError) as err:
        Router.load(system_dir)
    assert str(err.value) == (
        f"{weights} is damaged (truncated or not safetensors); rerun `pseudocot router CONFIG --force` to rewrite it."
    )


def test_router_weights_of_another_shape_and_a_router_json_without_keys(system_dir):
    assert Router.load(system_dir).max_thoughts == 2
    save_file({"net.0.weight": torch.zeros(3, 3)}, str(system_dir / ROUTER_WEIGHTS))
    with pytest.raises(PseudoCoTError, match=r"router.safetensors is damaged \(its tensors do not fit router.json\)"):
        Router.load(system_dir)
    (system_dir / "router.json").write_text("{}")
    with pytest.raises(
        PseudoCoTError, match=r"router.json is damaged \(no 'in_features' key\); rerun `pseudocot router"
    ):
        Router.load(system_dir)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("base: b\nttm: t\n", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"base": "b", "ttm": "t"}), "no 'max_thoughts' key"),
        (None, "its protocol or presets do not validate"),
    ],
)
def test_damaged_system_json(system_dir, text, problem):
    path = system_dir / SYSTEM_FILE
    if text is None:  # JSON with every key, one preset out of range
        text = json.dumps(json.loads(path.read_text()) | {"ttm_preset": {"max_new_tokens": -3}})
    path.write_text(text)
    with pytest.raises(PseudoCoTError) as err:
        read_system(system_dir)
    assert str(err.value) == f"{path} is damaged ({problem}); rerun `pseudocot router CONFIG --force` to rewrite it."


def test_a_system_json_without_an_answer_mode_scores_and_one_with_another_is_damaged(system_dir):
    assert read_system(system_dir)["answer_mode"] == "score"  # written before the answer mode was kept
    path = system_dir / SYSTEM_FILE
    path.write_text(json.dumps(json.loads(path.read_text()) | {"answer_mode": "guess"}))
    with pytest.raises(PseudoCoTError, match=r"answer_mode 'guess' is neither score nor generate\); rerun"):
        read_system(system_dir)


def test_the_rewrite_hint_finds_the_stage_above_and_names_a_real_command(tmp_path):
    merged = _stage_dir(tmp_path / "finetune" / "base", "finetune") / "merged"
    merged.mkdir()
    assert rewrite_hint(merged / "model.safetensors") == (
        "rerun `pseudocot finetune CONFIG --which base --force` to rewrite it"
    )
    assert rewrite_hint(tmp_path / "elsewhere" / "model.safetensors") == "replace it with a complete copy"
    names = {"synth": "traces", "finetune": "base", "distill": "mid", "answer": "test"}
    for stage, command in RERUN.items():
        words = command.format(name=names.get(stage, stage)).split()
        help_text = CliRunner().invoke(app, [*words[: words.index("CONFIG")], "--help"]).output
        for option in ["--force", "--restart", *(w for w in words if w.startswith("--"))]:
            assert option in help_text, (command, option)


def test_the_cli_prints_one_line_and_exits_non_zero(system_dir):
    (system_dir / SYSTEM_FILE).write_text("{ not json")
    result = CliRunner().invoke(app, ["ask", "What is 2 + 2?", "--system", str(system_dir)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # typer.Exit, not a crash
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "system.json is damaged (not JSON)" in lines[0]
