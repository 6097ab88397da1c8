"""Policy replay, APGR and AUROC on constructed rollouts with known answers; router save/load; policies."""

import math

import pytest
import torch

from pseudocot.errors import PseudoCoTError
from pseudocot.infer.router import AnswerState, EntropyPolicy, Router, RouterMLP, make_policy
from pseudocot.records import Record
from pseudocot.train.rollouts import Rollouts, apgr, at_call_rate, auroc, auroc_interval, curve


def _state(n: int, step: int) -> AnswerState:
    probs = torch.tensor([[0.7, 0.1, 0.1, 0.1]] * n)
    return AnswerState(torch.zeros(n, 3), probs, torch.full((n,), step), torch.zeros(n, dtype=torch.bool))


def _rollouts(correct: list[list[bool]]) -> Rollouts:
    n, m1 = len(correct), len(correct[0])
    flops = torch.arange(1, m1 + 1, dtype=torch.float32).repeat(n, 1)  # stopping after t thoughts costs t + 1
    records = [Record(id=str(i), source="s", question="q", choices=["a", "b"], answer="A") for i in range(n)]
    return Rollouts(records, torch.tensor(correct), flops, [_state(n, t) for t in range(m1)])


def test_simulate_stops_at_the_first_score_not_above_the_threshold():
    r = _rollouts([[False, True, True], [True, False, False], [False, False, True]])
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.9], [0.9, 0.9]])  # thinks 1, 0 and 2 times at 0.5
    out = r.simulate(scores, 0.5)
    assert out["accuracy"] == pytest.approx(1.0)
    assert out["call_rate"] == pytest.approx(2 / 3)
    assert out["mean_thoughts"] == pytest.approx(1.0)
    assert out["mean_flops"] == pytest.approx((2 + 1 + 3) / 3)
    assert r.fixed(0)["accuracy"] == pytest.approx(1 / 3) and r.fixed(2)["accuracy"] == pytest.approx(2 / 3)


def test_apgr_and_auroc_of_an_oracle_and_a_reversed_ranking():
    # Four questions a thought fixes and four it does not touch (two right already, two hopeless).
    correct = [[False, True]] * 4 + [[True, True]] * 2 + [[False, False]] * 2
    r = _rollouts(correct)
    oracle = torch.tensor([[1.0]] * 4 + [[0.0]] * 4)
    # Call rate 10%..50%: 1, 2, 3, 4 (rounded) of the 4 fixable questions, then all recovered.
    expected = (round(0.8) / 4 + round(1.6) / 4 + round(2.4) / 4 + round(3.2) / 4 + 1 + 1 + 1 + 1 + 1 + 1) / 10
    assert apgr(r, oracle) == pytest.approx(expected)
    assert auroc(r.helps(0), oracle[:, 0]) == pytest.approx(1.0)
    reverse = torch.tensor([[0.0]] * 4 + [[1.0]] * 4)
    assert auroc(r.helps(0), reverse[:, 0]) == pytest.approx(0.0)
    assert apgr(r, reverse) < apgr(r, oracle)
    points = curve(r, oracle)
    assert points[0]["call_rate"] == 0.0 and points[-1]["call_rate"] == 1.0
    assert math.isnan(auroc(torch.zeros(4, dtype=torch.bool), torch.rand(4)))


def test_the_auroc_interval_narrows_with_more_questions_and_holds_the_estimate():
    torch.manual_seed(0)

    def noisy(n):
        labels = torch.rand(n) < 0.4
        return labels, labels.float() + torch.randn(n)  # a ranking with noise: AUROC near 0.76

    intervals = {}
    for n in (40, 4000):
        labels, scores = noisy(n)
        low, high = auroc_interval(labels, scores, resamples=300)
        assert low < auroc(labels, scores) < high
        intervals[n] = high - low
    assert intervals[4000] < intervals[40] / 4
    assert all(math.isnan(v) for v in auroc_interval(torch.zeros(4, dtype=torch.bool), torch.rand(4)))


def test_router_survives_save_and_load(tmp_path):
    torch.manual_seed(0)
    router = Router(RouterMLP(8, [5]), max_thoughts=2, threshold=0.37, meta={"validation": {"apgr": 0.9}})
    router.save(tmp_path)
    loaded = Router.load(tmp_path)
    state = AnswerState(torch.randn(4, 3), torch.softmax(torch.randn(4, 4), -1), torch.arange(4), torch.ones(4).bool())
    assert torch.equal(router.scores(state), loaded.scores(state))
    assert loaded.threshold == 0.37 and loaded.meta["validation"]["apgr"] == 0.9


def test_policies_by_name_and_a_clear_error_for_unknown_ones():
    state = _state(3, 0)
    assert not make_policy("never").decide(state)[1].any()
    assert make_policy("always").decide(state)[1].all()
    entropy = make_policy("entropy:0.1")
    assert isinstance(entropy, EntropyPolicy) and entropy.decide(state)[1].all()
    rate = make_policy("random:0.25").decide(_state(4000, 0))[1].float().mean().item()
    assert rate == pytest.approx(0.25, abs=0.03)
    with pytest.raises(PseudoCoTError, match="unknown policy"):
        make_policy("sometimes")
    with pytest.raises(PseudoCoTError, match=r"must be in \[0, 1\]"):
        make_policy("random:2")
    with pytest.raises(PseudoCoTError, match="no router"):
        make_policy("router")


def test_call_rate_one_keeps_every_later_thought_even_with_saturated_scores():
    # Only the second thought fixes these answers; scores at 1.0 (or inf) must not be cut at later steps.
    r = _rollouts([[False, False, True]] * 4)
    for value in (1.0, float("inf")):
        scores = torch.full((4, 2), value)
        assert at_call_rate(r, scores, 1.0)["mean_thoughts"] == 2.0
        assert apgr(r, scores) > 0.5
