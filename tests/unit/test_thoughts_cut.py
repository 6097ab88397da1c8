"""The evaluation says when a row's thoughts stopped at their token ceiling (their last steps are missing)."""

from pseudocot.config import EvalSystemConfig
from pseudocot.eval.harness import _warn_cut


def _said(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


def test_cut_thoughts_are_named_with_the_preset_to_raise(capsys):
    teacher = EvalSystemConfig(name="teacher + own CoT", kind="cot", model="finetune:teacher")
    _warn_cut(teacher, "tiny:cs", [{"thoughts_cut": 1}, {"thoughts_cut": 0}, {"thoughts_cut": 1}])
    said = _said(capsys)
    assert "2 thoughts of teacher + own CoT (tiny:cs) stopped at max_new_tokens" in said
    assert "decoding.eval" in said
    system = EvalSystemConfig(name="fine-tuned base + pseudo-CoT", kind="pseudo_cot")
    _warn_cut(system, "tiny:math", [{"thoughts_cut": 3}])
    said = _said(capsys)
    assert "3 thoughts of fine-tuned base + pseudo-CoT (tiny:math)" in said and "decoding.ttm" in said


def test_nothing_is_said_when_no_thought_was_cut_or_the_run_predates_the_count(capsys):
    row = EvalSystemConfig(name="fine-tuned base + pseudo-CoT", kind="pseudo_cot")
    _warn_cut(row, "tiny:math", [{"thoughts_cut": 0}, {}])
    assert _said(capsys) == ""
