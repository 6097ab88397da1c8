"""The router (paper 3): after each answer of the base, a small MLP decides whether to add a thought.

It reads features of the base's current answer (:class:`AnswerState`): the base's last-layer hidden
state where it gives the answer, its confidence (the top option's probability, the margin to the
second, the entropy over the options), the step index and whether the answer just changed. Its
output is the probability that another thought turns a wrong answer right; the system thinks when
that probability is above the calibrated threshold.

The baselines the router is compared with are policies too (:func:`make_policy`): never, always,
random at a given rate, and the base's own entropy over the options.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pseudocot.config import check_policy
from pseudocot.errors import PseudoCoTError
from pseudocot.stage import check_safetensors, file_error, read_json

ROUTER_WEIGHTS = "router.safetensors"
ROUTER_CONFIG = "router.json"


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of confidences over the options, along the last dimension (a zero adds nothing)."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1)


@dataclass
class AnswerState:
    """Features of N answers of the base."""

    hidden: torch.Tensor  # (N, H) last-layer hidden state where the answer is given
    probs: torch.Tensor  # (N, C) confidence over the options (or the answer's least sure token's top C)
    step: torch.Tensor  # (N,) thoughts given before this answer
    changed: torch.Tensor  # (N,) bool: the answer differs from the previous one

    def confidence(self) -> torch.Tensor:
        """(N, 3): top probability, margin to the second, entropy (nats)."""
        top = self.probs.topk(min(2, self.probs.shape[1]), dim=-1).values  # (N, 2)
        margin = top[:, 0] - top[:, 1] if top.shape[1] > 1 else top[:, 0]
        return torch.stack([top[:, 0], margin, entropy(self.probs)], dim=-1)

    def features(self, max_thoughts: int) -> torch.Tensor:
        """(N, H + 5) the router's input."""
        extra = torch.stack([self.step.float() / max(1, max_thoughts), self.changed.float()], dim=-1)
        return torch.cat([self.hidden.float(), self.confidence(), extra], dim=-1)


class RouterMLP(nn.Module):
    """Standardised features -> hidden layers (ReLU) -> one logit."""

    def __init__(self, in_features: int, hidden_sizes: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, F) features -> (N,) logits."""
        return self.net((features - self.mean) / self.std).squeeze(-1)


class Policy:
    """Scores answers; the system adds a thought where the score is above ``threshold``."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold

    def scores(self, state: AnswerState) -> torch.Tensor:
        """(N,) higher means more in need of a thought."""
        raise NotImplementedError

    def decide(self, state: AnswerState) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, whether to think) for N answers."""
        scores = self.scores(state)
        return scores, scores > self.threshold


class Router(Policy):
    """The trained MLP router with its calibrated threshold."""

    def __init__(self, mlp: RouterMLP, max_thoughts: int, threshold: float = 0.5, meta: dict | None = None) -> None:
        super().__init__(threshold)
        self.mlp = mlp.eval()
        self.max_thoughts = max_thoughts
        self.meta = meta or {}

    @torch.inference_mode()
    def scores(self, state: AnswerState) -> torch.Tensor:
        """(N,) probability that another thought makes a wrong answer right."""
        return torch.sigmoid(self.mlp(state.features(self.max_thoughts)))

    def save(self, out: Path) -> None:
        """Writes ``router.safetensors`` and ``router.json`` into ``out``."""
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.mlp.state_dict().items()}, str(out / ROUTER_WEIGHTS))
        config = {
            "in_features": self.mlp.mean.shape[0],
            "hidden_sizes": [m.out_features for m in self.mlp.net if isinstance(m, nn.Linear)][:-1],
            "max_thoughts": self.max_thoughts,
            "threshold": self.threshold,
            **self.meta,
        }
        (out / ROUTER_CONFIG).write_text(json.dumps(config, indent=2))

    @classmethod
    def load(cls, path: Path) -> Router:
        """Reads a router written by :meth:`save`.

        Raises:
            PseudoCoTError: ``path`` holds no router, or its files are damaged (named, with the
                command that rewrites them).
        """
        path = Path(path)
        if not (path / ROUTER_CONFIG).is_file():
            raise PseudoCoTError(f"{path} holds no router ({ROUTER_CONFIG}); run `pseudocot router` first.")
        shape = ("in_features", "hidden_sizes", "max_thoughts", "threshold")
        config = read_json(path / ROUTER_CONFIG, shape)
        check_safetensors(path / ROUTER_WEIGHTS)
        mlp = RouterMLP(config["in_features"], config["hidden_sizes"])
        try:
            mlp.load_state_dict(load_file(str(path / ROUTER_WEIGHTS)))
        except RuntimeError:  # tensor names or shapes that do not fit router.json
            raise file_error(path / ROUTER_WEIGHTS, f"is damaged (its tensors do not fit {ROUTER_CONFIG})") from None
        meta = {k: v for k, v in config.items() if k not in shape}
        return cls(mlp, config["max_thoughts"], config["threshold"], meta)


class Never(Policy):
    """Never think: the base answers directly."""

    def scores(self, state: AnswerState) -> torch.Tensor:
        return torch.full((state.step.shape[0],), float("-inf"))


class Always(Policy):
    """Always think (up to the loop's maximum number of thoughts)."""

    def scores(self, state: AnswerState) -> torch.Tensor:
        return torch.full((state.step.shape[0],), float("inf"))


class RandomPolicy(Policy):
    """Think with probability ``rate`` at each decision, seeded."""

    def __init__(self, rate: float, seed: int = 0) -> None:
        super().__init__(1.0 - rate)
        self.generator = torch.Generator().manual_seed(seed)

    def scores(self, state: AnswerState) -> torch.Tensor:
        return torch.rand(state.step.shape[0], generator=self.generator)


class EntropyPolicy(Policy):
    """The base's own uncertainty: think when its entropy over the options is above the threshold."""

    def scores(self, state: AnswerState) -> torch.Tensor:
        return entropy(state.probs)


def make_policy(spec: str, router: Router | None = None) -> Policy:
    """A policy from its name: ``router``, ``never``, ``always``, ``random:RATE`` or ``entropy:NATS``."""
    try:
        check_policy(spec)
    except ValueError as err:
        raise PseudoCoTError(f"{err}.") from None
    name, _, arg = spec.partition(":")
    if name == "router":
        if router is None:
            raise PseudoCoTError("this system has no router; use never, always, random:RATE or entropy:NATS.")
        return router
    if name == "never":
        return Never()
    if name == "always":
        return Always()
    if name == "random":
        return RandomPolicy(float(arg or 0.5))
    return EntropyPolicy(float(arg or 0.5))
