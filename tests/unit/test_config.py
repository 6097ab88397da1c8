from pathlib import Path

import pytest
import yaml

from pseudocot.config import PseudoCoTConfig, apply_overrides, check_policy, field_help, load_config, section_hash
from pseudocot.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_configs_folder_has_the_two_presets():
    assert {p.name for p in CONFIGS} >= {"tiny.yaml", "paper.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_preset_loads(path):
    assert isinstance(load_config(path), PseudoCoTConfig)


def test_paper_preset_has_the_papers_hyperparameters():
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "paper.yaml")
    base = cfg.finetune.base
    assert base.model == "meta-llama/Llama-3.1-8B-Instruct" and base.load_in_4bit
    assert (base.lora.r, base.lora.alpha, base.learning_rate, base.per_device_train_batch_size, base.max_steps) == (
        32,
        64,
        2e-4,
        8,
        300,
    )
    assert set(base.lora.target_modules) == {"q_proj", "k_proj", "v_proj", "up_proj", "down_proj"}
    assert cfg.distill.mid.student == "meta-llama/Llama-3.2-3B-Instruct"
    assert cfg.distill.ttm.student == "meta-llama/Llama-3.2-1B-Instruct"
    for hop in (cfg.distill.mid, cfg.distill.ttm):
        assert (hop.divergence, hop.per_device_train_batch_size, hop.max_steps) == ("reverse_kl", 2, 200)
        assert hop.lora.target_modules == ["q_proj", "k_proj"]
    assert cfg.decoding.base.num_beams == 2 and cfg.decoding.base.temperature == 0.6
    assert cfg.decoding.ttm.max_new_tokens == 512 and cfg.decoding.base.max_new_tokens == 2048
    assert cfg.eval.benchmarks == ["mmlu:college_mathematics", "mmlu:college_computer_science"]


def _write(tmp_path, data) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


MINIMAL = {"data": {"sources": [{"name": "x", "kind": "jsonl", "path": "x.jsonl"}], "tokenizer": "org/model"}}


def test_unknown_key_names_key_and_file(tmp_path):
    path = _write(tmp_path, {**MINIMAL, "zooo": {}})
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key 'zooo'"):
        load_config(path)


def test_wrong_type_and_out_of_range_name_the_key(tmp_path):
    path = _write(tmp_path, {**MINIMAL, "router": {"max_thoughts": "many"}})
    with pytest.raises(ConfigError, match=r"'router\.max_thoughts'"):
        load_config(path)
    path = _write(tmp_path, {**MINIMAL, "router": {"max_thoughts": 0}})
    with pytest.raises(ConfigError, match=r"'router\.max_thoughts': Input should be greater than or equal to 1"):
        load_config(path)


def test_dotted_overrides_parse_yaml_values(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL), ["router.max_thoughts=4", "router.hidden_sizes=[8, 8]", "run_dir=out"])
    assert cfg.router.max_thoughts == 4 and cfg.router.hidden_sizes == [8, 8] and cfg.run_dir == "out"


def test_override_errors_are_sentences(tmp_path):
    with pytest.raises(ConfigError, match="not of the form key.path=value"):
        load_config(_write(tmp_path, MINIMAL), ["router.max_thoughts"])
    with pytest.raises(ConfigError, match="'run_dir' is not a section"):
        apply_overrides({"run_dir": "x"}, ["run_dir.deeper=1"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)


def test_cross_field_validation(tmp_path):
    data = {**MINIMAL, "world": {"easy_max_steps": 3, "hard_min_steps": 2}}
    with pytest.raises(ConfigError, match="hard_min_steps must be greater than easy_max_steps"):
        load_config(_write(tmp_path, data))


def test_every_field_has_a_description():
    rows = field_help()
    assert len(rows) > 50
    assert all(desc for _, _, desc in rows), [key for key, _, desc in rows if not desc]


def test_section_hash_is_stable_and_sensitive():
    assert section_hash({"a": 1, "b": 2}) == section_hash({"b": 2, "a": 1})
    assert section_hash({"a": 1}) != section_hash({"a": 2})


def test_sections_that_need_each_other(tmp_path):
    with pytest.raises(ConfigError, match="data.tokenizer 'world' needs a world section"):
        load_config(_write(tmp_path, {"data": {"sources": [{"name": "x", "kind": "jsonl", "path": "x"}]}}))
    with pytest.raises(ConfigError, match="must not repeat a level"):
        load_config(_write(tmp_path, {**MINIMAL, "world": {"levels": [1, 1]}}))


def test_full_fine_tune_of_4bit_weights_and_call_rate_without_target_are_errors(tmp_path):
    path = Path("configs/tiny.yaml")
    with pytest.raises(ConfigError, match="method: full cannot train 4-bit weights"):
        load_config(path, ["finetune.teacher.load_in_4bit=true"])
    with pytest.raises(ConfigError, match="calibrate: call_rate needs target_call_rate"):
        load_config(path, ["router.calibrate=call_rate"])
    assert load_config(path, ["router.calibrate=call_rate", "router.target_call_rate=0.5"]).router.target_call_rate


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe",
            r"c\.yaml is not a text file \(not UTF-8\); pass a YAML config",
        ),
        (b"data:\x00\x01", r"c\.yaml: not valid YAML; fix it, or start from configs/tiny\.yaml\."),
        (b"- world\n- data\n", r"c\.yaml: the top level is a list, not a mapping of stage sections"),
        (b"just words", r"c\.yaml: the top level is a str, not a mapping"),
        (b"", r"c\.yaml is empty; give it stage sections"),
        (b"# only a comment\n", r"c\.yaml is empty"),
        (b"{}", r"c\.yaml has no stage section, so there is nothing to run; add one of world, zoo"),
        (b"run_dir: out\nprotocol: {one_shot: true}\n", r"c\.yaml has no stage section"),
    ],
    ids=["binary", "control-chars", "list", "scalar", "empty", "comment-only", "empty-mapping", "no-stage"],
)
def test_damaged_or_empty_files_are_one_sentence_naming_the_file(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_an_override_can_supply_the_only_stage(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run_dir: out\n")
    assert load_config(path, ["world.seed=3"]).world.seed == 3


@pytest.mark.parametrize("spec", ["router", "never", "always", "random", "random:0", "random:1", "entropy:0.7"])
def test_valid_policies(spec):
    assert check_policy(spec) == spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("random:2", r"policy 'random:2': RATE is the probability of a thought and must be in \[0, 1\]"),
        ("random:-0.1", r"must be in \[0, 1\]"),
        ("random:nan", r"must be in \[0, 1\]"),
        ("entropy:-1", r"policy 'entropy:-1': NATS .* must be a number >= 0"),
        ("entropy:inf", r"must be a number >= 0"),
        ("sometimes", r"unknown policy 'sometimes'; use router, never, always, random:RATE"),
        ("always:3", r"unknown policy 'always:3'"),
    ],
)
def test_invalid_policies_are_one_sentence(spec, message):
    with pytest.raises(ValueError, match=message):
        check_policy(spec)


def test_eval_system_policy_is_checked_with_the_file(tmp_path):
    system = {"name": "p", "kind": "pseudo_cot", "policy": "random:2"}
    path = _write(tmp_path, {**MINIMAL, "eval": {"benchmarks": ["tiny:math"], "systems": [system]}})
    with pytest.raises(ConfigError, match=r"c\.yaml: 'eval\.systems\.0\.policy': policy 'random:2': RATE .* \[0, 1\]"):
        load_config(path)
