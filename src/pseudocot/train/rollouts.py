"""Always-think rollouts for router training: exact simulation of any policy, APGR and AUROC.

With greedy decoding the loop is deterministic, so one *always-think* rollout of each question (the
base's answer after 0, 1, .., M thoughts, with the features of each answer) contains what any policy
would do: a policy that stops at step t ends with the answer of step t and the cost of the steps
before it. :meth:`Rollouts.simulate` replays a policy's scores that way, so the router, its
baselines and every threshold of a sweep are compared on the very same answers. (With a sampling
preset for the base's written answers, a rollout is one draw of the loop, and a replay an estimate.)

APGR is RouteLLM's *average performance gap recovered* (their Eq. 8): the performance gap recovered,
``PGR = (accuracy - never) / (always - never)``, averaged over the call rates 10%, 20%, .., 100%
(the share of questions given a thought), each reached by giving thoughts to the questions the
policy ranks highest. "Always" is always thinking up to the maximum number of thoughts. A perfect
ranking scores ``1 - p/2`` (nearer 1 when thoughts also hurt some questions); a random one
about 0.55.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from sklearn.metrics import roc_auc_score

from pseudocot.infer.choice import is_right
from pseudocot.infer.loop import flops
from pseudocot.infer.router import Always, AnswerState, Policy
from pseudocot.infer.system import PseudoCoT
from pseudocot.records import Record


@dataclass
class Rollouts:
    """Always-think trajectories of N questions, M thoughts each."""

    records: list[Record]
    correct: torch.Tensor  # (N, M + 1) bool: the answer after t thoughts is right
    flops: torch.Tensor  # (N, M + 1) cost of stopping after t thoughts
    states: list[AnswerState]  # M + 1 entries, each with N rows: the features of the answers after t thoughts

    @property
    def max_thoughts(self) -> int:
        return self.correct.shape[1] - 1

    def helps(self, step: int = 0) -> torch.Tensor:
        """(N,) bool: the answer after ``step`` thoughts is wrong and one more thought makes it right."""
        return ~self.correct[:, step] & self.correct[:, step + 1]

    def policy_scores(self, policy: Policy) -> torch.Tensor:
        """(N, M) the policy's score after each answer that it would judge."""
        return torch.stack([policy.scores(self.states[t]) for t in range(self.max_thoughts)], dim=1)

    def simulate(self, scores: torch.Tensor, threshold: float, first: torch.Tensor | None = None) -> dict[str, float]:
        """What a policy with these scores and threshold does: stop at the first score not above it.

        ``first`` (N,) bool, if given, replaces the first decision (to reach an exact call rate).
        """
        n = scores.shape[0]
        think = scores > threshold  # (N, M)
        if first is not None:
            think[:, 0] = first
        # Steps taken: the number of leading True in each row.
        stops = torch.cumprod(think.int(), dim=1).sum(1)  # (N,)
        rows = torch.arange(n)
        return {
            "accuracy": self.correct[rows, stops].float().mean().item(),
            "call_rate": (stops > 0).float().mean().item(),
            "mean_thoughts": stops.float().mean().item(),
            "mean_flops": self.flops[rows, stops].mean().item(),
        }

    def fixed(self, thoughts: int) -> dict[str, float]:
        """Always exactly ``thoughts`` thoughts (0 = never think)."""
        n, m = self.correct.shape[0], self.max_thoughts
        scores = torch.full((n, m), float("-inf"))
        scores[:, :thoughts] = float("inf")  # think at the first ``thoughts`` decisions, then stop
        return self.simulate(scores, 0.0)

    def subset(self, mask: torch.Tensor) -> Rollouts:
        """The rollouts of the questions where ``mask`` is true."""
        index = mask.nonzero().squeeze(-1)
        states = [AnswerState(s.hidden[index], s.probs[index], s.step[index], s.changed[index]) for s in self.states]
        records = [self.records[i] for i in index.tolist()]
        return Rollouts(records, self.correct[index], self.flops[index], states)


def rollout(system: PseudoCoT, records: Sequence[Record], max_thoughts: int) -> Rollouts:
    """Runs the loop on ``records`` always thinking ``max_thoughts`` times, keeping every step."""
    rounds: dict[int, list[tuple[list[int], AnswerState]]] = {}

    def keep(indices: list[int], state: AnswerState) -> None:
        rounds.setdefault(int(state.step[0]), []).append((indices, state))

    results = system.run(records, Always(), max_thoughts, on_state=keep)
    states = []
    for t in sorted(rounds):  # the loop runs questions in chunks: put each step's rows back in order
        order = torch.tensor([i for indices, _ in rounds[t] for i in indices]).argsort()
        parts = [s for _, s in rounds[t]]
        width = max(s.probs.shape[1] for s in parts)
        probs = torch.cat([torch.nn.functional.pad(s.probs, (0, width - s.probs.shape[1])) for s in parts])
        states.append(
            AnswerState(
                torch.cat([s.hidden for s in parts])[order],
                probs[order],
                torch.cat([s.step for s in parts])[order],
                torch.cat([s.changed for s in parts])[order],
            )
        )
    correct = torch.tensor([[is_right(r, c) for c in res.choices] for res, r in zip(results, records, strict=True)])
    base_p, ttm_p = system.parameters["base"], system.parameters["ttm"]
    cost = torch.zeros(len(records), max_thoughts + 1)
    for i, res in enumerate(results):
        total = 0.0
        for t in range(max_thoughts + 1):
            total += flops(base_p, res.base_tokens[t]) + (flops(ttm_p, res.ttm_tokens[t - 1]) if t else 0)
            cost[i, t] = total
    return Rollouts(list(records), correct, cost, states)


def threshold_sweep(scores: torch.Tensor, points: int = 101) -> list[float]:
    """Thresholds from "always" to "never": quantiles of the first decision's scores, plus both ends."""
    first = scores[:, 0].float()
    finite = first[torch.isfinite(first)]
    if finite.numel() == 0:
        return [float("-inf"), float("inf")]
    qs = torch.quantile(finite, torch.linspace(0, 1, points)).tolist()
    return sorted({float("-inf"), *qs, float("inf")})


def curve(rollouts: Rollouts, scores: torch.Tensor) -> list[dict[str, float]]:
    """The policy's operating points (call rate, accuracy, cost) over a sweep of thresholds."""
    points = [rollouts.simulate(scores, t) | {"threshold": t} for t in threshold_sweep(scores)]
    return sorted(points, key=lambda p: (p["call_rate"], p["mean_thoughts"]))


def at_call_rate(rollouts: Rollouts, scores: torch.Tensor, rate: float) -> dict[str, float]:
    """The policy with the first thought given to the ``rate`` share of questions it ranks highest
    (ties in question order); later thoughts where a score passes the lowest first score called."""
    n = scores.shape[0]
    k = round(rate * n)
    order = torch.sort(scores[:, 0], descending=True, stable=True).indices
    first = torch.zeros(n, dtype=torch.bool)
    first[order[:k]] = True
    lowest = scores[order[k - 1], 0] if k else None
    # Just below the lowest first score called, in the scores' own precision (inf stays above it).
    threshold = float(torch.nextafter(lowest, torch.tensor(float("-inf"), dtype=lowest.dtype))) if k else float("inf")
    return rollouts.simulate(scores, threshold, first)


def apgr(rollouts: Rollouts, scores: torch.Tensor, bins: int = 10) -> float:
    """Average performance gap recovered over call rates 1/bins .. 1 (RouteLLM, Eq. 8)."""
    never, always = rollouts.fixed(0)["accuracy"], rollouts.fixed(rollouts.max_thoughts)["accuracy"]
    if always == never:
        return float("nan")
    gaps = [
        (at_call_rate(rollouts, scores, i / bins)["accuracy"] - never) / (always - never) for i in range(1, bins + 1)
    ]
    return sum(gaps) / bins


def auroc(labels: torch.Tensor, scores: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (nan if one class is absent)."""
    labels = labels.bool()
    if labels.all() or not labels.any():
        return float("nan")
    finite = torch.nan_to_num(scores.float(), posinf=1e9, neginf=-1e9)
    return float(roc_auc_score(labels.numpy(), finite.numpy()))


def auroc_interval(
    labels: torch.Tensor, scores: torch.Tensor, level: float = 0.95, resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`auroc` over questions (nan if one class is absent)."""
    generator = torch.Generator().manual_seed(seed)
    n = len(labels)
    values = torch.tensor(
        [auroc(labels[idx], scores[idx]) for idx in torch.randint(n, (resamples, n), generator=generator)]
    )
    values = values[~values.isnan()]
    if len(values) == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2
    return float(values.quantile(tail)), float(values.quantile(1 - tail))
