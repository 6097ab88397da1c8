"""Knowledge-distillation losses (paper 2, 4.2.2): cross-entropy mixed with a weighted divergence.

The loss of one hop of the two-step distillation is ``alpha * CE + (1 - alpha) * T^2 * D``, where CE
is the student's cross-entropy on the target tokens and D a divergence between the teacher's and
the student's next-token distributions at temperature T (the T^2 keeps gradient scales comparable
across temperatures, as in Hinton et al.). The paper's choice is reverse KL.

Contract shared by every function here:

* ``logits`` are aligned with ``labels``: position i of the logits predicts ``labels[i]`` (callers
  shift, as ``logits[:, :-1]`` with ``labels[:, 1:]``).
* Positions whose label is ``IGNORE_INDEX`` (-100: prompt tokens, padding) do not count.
* Sums over counted positions are divided by ``num_items``: the number of counted positions in the
  whole (accumulated) batch when given, else in this call. So k gradient-accumulation micro-batches
  given the batch's total add up to exactly the loss of one large batch.
* Everything is computed in float32 log-space, whatever the logits' dtype.
* Work is done ``chunk_size`` positions at a time (counted positions only) under activation
  checkpointing, so no (positions, vocab) float32 tensor larger than one chunk is alive at once.

Divergences between teacher p and student q, per position (``beta`` in [0, 1]):

* ``forward_kl``: KL(p || q), mean-seeking.
* ``reverse_kl``: KL(q || p), mode-seeking (the paper's choice; MiniLLM).
* ``jsd``: generalized Jensen-Shannon, ``beta * KL(p || m) + (1 - beta) * KL(q || m)`` with
  ``m = beta * p + (1 - beta) * q`` (beta = 0.5 is the usual JSD; as in GKD). At the endpoints the
  mixture is one of the two distributions and that sum is 0, so, as TRL's ``generalized_jsd_loss``,
  beta = 0 is forward KL and beta = 1 reverse KL: the limits of JSD / beta and JSD / (1 - beta).
* ``skew_kl``: skew forward KL, ``KL(p || beta * p + (1 - beta) * q)`` (DistiLLM); beta = 0 is
  forward KL.

The teacher can be dense logits or a cached top-k (:class:`TopK`): its k largest log-probabilities
and their token ids, the remaining mass kept as one bucket. The student's distribution is then
collapsed onto the same k + 1 buckets before the divergence is taken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
Divergence = Literal["forward_kl", "reverse_kl", "jsd", "skew_kl"]


@dataclass
class TopK:
    """A cached teacher distribution: the k most likely tokens of each position."""

    indices: torch.Tensor  # (..., k) token ids
    logprobs: torch.Tensor  # (..., k) log-probabilities at temperature 1


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dimension, from log-probabilities. (N, V) -> (N,)"""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _mix(log_p: torch.Tensor, log_q: torch.Tensor, beta: float) -> torch.Tensor:
    """log(beta * p + (1 - beta) * q), stable for beta in [0, 1]."""
    if beta <= 0.0:
        return log_q
    if beta >= 1.0:
        return log_p
    return torch.logaddexp(log_p + math.log(beta), log_q + math.log(1.0 - beta))


def divergence(log_p: torch.Tensor, log_q: torch.Tensor, kind: Divergence, beta: float = 0.5) -> torch.Tensor:
    """Per-position divergence between teacher log-probs ``log_p`` and student log-probs ``log_q``.

    Args:
        log_p: teacher log-probabilities, (N, V).
        log_q: student log-probabilities, (N, V).
        kind: which divergence (see the module docstring).
        beta: mixing weight for ``jsd`` and ``skew_kl``.

    Returns:
        (N,) divergences, in nats.
    """
    if kind == "forward_kl":
        return _kl(log_p, log_q)
    if kind == "reverse_kl":
        return _kl(log_q, log_p)
    if kind == "jsd":
        if beta == 0.0:
            return _kl(log_p, log_q)
        if beta == 1.0:
            return _kl(log_q, log_p)
        log_m = _mix(log_p, log_q, beta)
        return beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)
    if kind == "skew_kl":
        return _kl(log_p, _mix(log_p, log_q, beta))
    raise ValueError(f"unknown divergence {kind!r}; choose forward_kl, reverse_kl, jsd or skew_kl")


def topk_buckets(log_q: torch.Tensor, teacher: TopK) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student distributions over the teacher's top-k tokens plus one "rest" bucket.

    Args:
        log_q: student log-probabilities over the whole vocabulary, (N, V).
        teacher: the teacher's top-k ids and log-probs, (N, k) each.

    Returns:
        (teacher, student) log-probabilities over k + 1 buckets, (N, k + 1) each.
    """

    def with_rest(top: torch.Tensor) -> torch.Tensor:
        # log(1 - sum(exp(top))), clamped so a top-k holding all the mass gives a tiny rest bucket.
        rest = torch.log1p(-top.exp().sum(-1, keepdim=True).clamp(max=1.0 - 1e-6))
        return torch.cat([top, rest], dim=-1)

    return with_rest(teacher.logprobs.float()), with_rest(log_q.gather(-1, teacher.indices))


def _chunk_sums(
    student_logits: torch.Tensor,
    teacher: torch.Tensor | TopK,
    targets: torch.Tensor,
    temperature: float,
    kind: Divergence,
    beta: float,
) -> torch.Tensor:
    """[sum of CE, sum of divergence] over one chunk of counted positions; (2,) float32."""
    logits = student_logits.float()  # (n, V)
    ce = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    log_q = (logits / temperature).log_softmax(-1)
    if isinstance(teacher, TopK):
        if temperature != 1.0:
            # Re-temper within the top k (p_T(i) proportional to p(i)^(1/T)), keeping the top k's total
            # mass: the cache does not hold the rest of the vocabulary, so this is an approximation.
            cached = teacher.logprobs.float()
            top = (cached / temperature).log_softmax(-1) + cached.logsumexp(-1, keepdim=True)
            teacher = TopK(teacher.indices, top)
        log_p, log_q = topk_buckets(log_q, teacher)
    else:
        log_p = (teacher.float() / temperature).log_softmax(-1)
    return torch.stack([ce, divergence(log_p, log_q, kind, beta).sum()])


def distillation_loss(
    student_logits: torch.Tensor,
    teacher: torch.Tensor | TopK,
    labels: torch.Tensor,
    alpha: float = 0.5,
    temperature: float = 1.0,
    kind: Divergence = "reverse_kl",
    beta: float = 0.5,
    num_items: int | torch.Tensor | None = None,
    chunk_size: int = 1024,
) -> dict[str, torch.Tensor]:
    """``alpha * CE + (1 - alpha) * T^2 * D``, masked and normalised as the module docstring says.

    Args:
        student_logits: (B, T, V) or (N, V), aligned with ``labels``.
        teacher: dense teacher logits of the same shape, or a :class:`TopK` whose tensors have the
            leading shape of ``labels`` and a last dimension k.
        labels: (B, T) or (N,) target ids, ``IGNORE_INDEX`` where not counted.
        alpha: weight of the cross-entropy term, in [0, 1].
        temperature: softmax temperature of the divergence term, > 0.
        kind: the divergence.
        beta: mixing weight of ``jsd`` and ``skew_kl``.
        num_items: counted positions in the whole accumulated batch (defaults to this call's).
        chunk_size: counted positions processed at a time.

    Returns:
        ``{"loss", "ce", "divergence"}``, each a scalar already divided by ``num_items``.

    Raises:
        ValueError: if ``alpha``, ``temperature`` or ``beta`` is out of range, or shapes disagree.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in the range [0.0, 1.0], got {alpha}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in the range [0.0, 1.0], got {beta}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    vocab = student_logits.shape[-1]
    if student_logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(student_logits.shape)} do not align with labels {tuple(labels.shape)}")
    mask = labels.reshape(-1) != IGNORE_INDEX  # (B*T,)
    flat_student = student_logits.reshape(-1, vocab)[mask]  # (N, V), counted positions only
    targets = labels.reshape(-1)[mask]  # (N,)
    if isinstance(teacher, TopK):
        k = teacher.indices.shape[-1]
        indices, logprobs = teacher.indices.reshape(-1, k)[mask], teacher.logprobs.reshape(-1, k)[mask]
        flat_teacher: torch.Tensor | TopK = TopK(indices, logprobs)
    else:
        if teacher.shape != student_logits.shape:
            shapes = f"{tuple(teacher.shape)} and {tuple(student_logits.shape)}"
            raise ValueError(f"teacher and student logits differ in shape: {shapes}")
        flat_teacher = teacher.reshape(-1, vocab)[mask]

    sums = student_logits.new_zeros(2, dtype=torch.float32)
    for start in range(0, targets.shape[0], chunk_size):
        end = start + chunk_size
        t_chunk = (
            TopK(flat_teacher.indices[start:end], flat_teacher.logprobs[start:end])
            if isinstance(flat_teacher, TopK)
            else flat_teacher[start:end]
        )
        args = (flat_student[start:end], t_chunk, targets[start:end], temperature, kind, beta)
        if flat_student.requires_grad:
            sums = sums + checkpoint(_chunk_sums, *args, use_reentrant=False)
        else:
            sums = sums + _chunk_sums(*args)
    denominator = num_items if num_items is not None else mask.sum()
    denominator = torch.as_tensor(denominator, dtype=torch.float32, device=sums.device).clamp(min=1)
    ce, div = sums[0] / denominator, sums[1] / denominator
    return {"loss": alpha * ce + (1.0 - alpha) * temperature**2 * div, "ce": ce, "divergence": div}
