"""The router is trained in the regime it is used in, and calibrated again for a row that swaps the base."""

import json

import pytest
from typer.testing import CliRunner

from pseudocot.cli import app
from pseudocot.config import load_config
from pseudocot.errors import PseudoCoTError
from pseudocot.eval import harness
from pseudocot.eval.benchmarks import load_benchmark
from pseudocot.graph import Run
from pseudocot.infer.choice import extract_choice, is_right
from pseudocot.infer.system import PseudoCoT
from pseudocot.records import read_jsonl
from pseudocot.train.rollouts import rollout
from pseudocot.train.router import CALIBRATION_FILE, calibrate, recalibrate

from .helpers import copy_run


def test_a_router_of_written_answers_rolls_out_written_answers_with_the_evaluations_decoding(micro_run, tmp_path):
    config, shared, _ = micro_run
    run = copy_run(shared, tmp_path / "run", ("world", "data", "zoo", "finetune", "distill"))
    result = CliRunner().invoke(app, ["router", str(config), f"run_dir={run}", "eval.answer_mode=generate"])
    assert result.exit_code == 0, result.output
    assert "answers written" in " ".join(result.output.split())
    cfg = load_config(config)
    spec = json.loads((run / "system" / "system.json").read_text())
    calibration = json.loads((run / "system" / "router.json").read_text())["calibration"]
    assert spec["answer_mode"] == "generate" and calibration["answer_mode"] == "generate"
    assert calibration["base_preset"] == cfg.decoding.eval.model_dump(mode="json")
    assert spec["base_preset"] == cfg.decoding.base.model_dump(mode="json")  # chat and serve still decode with it

    # The system answers as it was trained: written answers; in the evaluation's regime the router is at home.
    system = PseudoCoT.load(run / "system", base_preset=cfg.decoding.eval)
    assert system.answer_mode == "generate" and system.regime_note() is None
    assert "score mode" in PseudoCoT.load(run / "system", answer_mode="score").regime_note()
    assert "decoded with" in PseudoCoT.load(run / "system").regime_note()  # decoding.base is another preset

    # The calibration questions are kept, and its figures are those of written answers.
    records = list(read_jsonl(run / "system" / CALIBRATION_FILE))
    assert len(records) == cfg.router.validation_questions
    rollouts = rollout(system, records, system.max_thoughts)
    never = system.run(records, "never")
    assert all(r.choice == extract_choice(r.answer, rec.choices) for r, rec in zip(never, records, strict=True))
    written = sum(is_right(rec, r.choice) for r, rec in zip(never, records, strict=True)) / len(records)
    validation = json.loads((run / "system" / "router.json").read_text())["validation"]
    assert validation["never"] == pytest.approx(written) == pytest.approx(rollouts.fixed(0)["accuracy"])


def test_a_row_that_swaps_the_base_has_its_threshold_calibrated_on_that_bases_rollouts(micro_run):
    config, run, _ = micro_run
    cfg = load_config(config, ["eval.recalibrate=true"])
    pipe = Run(cfg)
    swapped = next(s for s in pipe.eval_systems() if s.kind == "pseudo_cot" and s.model)
    own = next(s for s in pipe.eval_systems() if s.kind == "pseudo_cot" and not s.model and s.policy == "router")
    args = (pipe.resolve_model, str(run / "system"), cfg.protocol, cfg.decoding.eval, cfg.eval)
    runner, info = harness.load_system(swapped, *args)

    # The same threshold, found by hand: the swapped base's always-think rollouts on the calibration questions.
    alone = PseudoCoT.load(run / "system", base=pipe.resolve_model(swapped.model), base_preset=cfg.decoding.eval)
    records = list(read_jsonl(run / "system" / CALIBRATION_FILE))
    expected = calibrate(rollout(alone, records, alone.max_thoughts), alone.router, cfg.router)
    assert runner.router.threshold == info["router"]["threshold"] == expected
    assert info["router"]["calibrated_on"] == "this base"
    assert info["router"]["system_threshold"] == json.loads((run / "system" / "router.json").read_text())["threshold"]
    assert info["router"]["calibration"]["questions"] == len(records)

    # Without eval.recalibrate, and for the system's own base, the threshold is the system's, and says so.
    plain = load_config(config)
    _, kept = harness.load_system(swapped, *args[:-1], plain.eval)
    _, itself = harness.load_system(own, *args)
    system_threshold = info["router"]["system_threshold"]
    assert kept["router"] == {"calibrated_on": "the system's base", "threshold": system_threshold}
    assert itself["router"] == {"calibrated_on": "the system's base", "threshold": system_threshold}

    # Only the recalibrated row's runs are keyed on it.
    assert harness.recalibrates(swapped, cfg.eval) and not harness.recalibrates(own, cfg.eval)
    assert not harness.recalibrates(swapped, plain.eval)


def test_recalibration_through_the_evaluation_reruns_only_that_row(micro_run, tmp_path):
    config, run, _ = micro_run
    cfg = load_config(config, ["eval.recalibrate=true"])
    pipe = Run(cfg)
    systems = [s for s in pipe.eval_systems() if s.kind == "plain" or s.model][:2]  # base, base + pseudo-CoT
    benchmarks = {"tiny:math": load_benchmark("tiny:math", "test", None, run / "world", 4)}

    def evaluate(eval_cfg):
        args = (eval_cfg, cfg.protocol, cfg.decoding.eval, pipe.resolve_model, str(run / "system"), tmp_path)
        return harness.evaluate(systems, benchmarks, *args, {"limit": 4})

    evaluate(load_config(config).eval)
    first = sorted(p.stem for p in tmp_path.iterdir())
    again = evaluate(cfg.eval)
    keys = sorted(p.stem for p in tmp_path.iterdir())
    assert len(keys) == 3 and set(first) < set(keys)  # the plain row's run is kept, the swapped row's is new
    assert again.systems[1]["router"]["calibrated_on"] == "this base"


def test_a_system_without_calibration_questions_is_one_sentence(micro_run, tmp_path):
    _, shared, _ = micro_run
    run = copy_run(shared, tmp_path / "run")
    (run / "system" / CALIBRATION_FILE).unlink()
    system = PseudoCoT.load(run / "system")
    with pytest.raises(PseudoCoTError, match=r"keeps no calibration questions .* `pseudocot router --force`"):
        recalibrate(system, run / "system")
