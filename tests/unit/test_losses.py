import math

import pytest
import torch
import torch.nn.functional as F

from pseudocot.train.losses import IGNORE_INDEX, TopK, distillation_loss, divergence, topk_buckets

P = torch.tensor([[0.5, 0.25, 0.25]])
Q = torch.tensor([[0.25, 0.5, 0.25]])
KINDS = ["forward_kl", "reverse_kl", "jsd", "skew_kl"]


def _kl(p, q):
    return float((p * (p / q).log()).sum())


def test_divergences_in_closed_form():
    lp, lq = P.log(), Q.log()
    assert divergence(lp, lq, "forward_kl").item() == pytest.approx(_kl(P, Q), rel=1e-5)
    assert divergence(lp, lq, "reverse_kl").item() == pytest.approx(_kl(Q, P), rel=1e-5)
    m = 0.5 * P + 0.5 * Q
    assert divergence(lp, lq, "jsd", 0.5).item() == pytest.approx(0.5 * _kl(P, m) + 0.5 * _kl(Q, m), rel=1e-5)
    m = 0.3 * P + 0.7 * Q
    assert divergence(lp, lq, "skew_kl", 0.3).item() == pytest.approx(_kl(P, m), rel=1e-5)
    assert divergence(lp, lq, "skew_kl", 0.0).item() == pytest.approx(_kl(P, Q))  # beta = 0: forward KL


@pytest.mark.parametrize("kind", KINDS)
def test_divergences_vanish_on_equal_distributions_and_are_non_negative(kind):
    torch.manual_seed(0)
    a, b = torch.randn(16, 50).log_softmax(-1), torch.randn(16, 50).log_softmax(-1)
    assert divergence(a, a, kind).abs().max() < 1e-5
    assert (divergence(a, b, kind) >= -1e-6).all()


def test_jsd_is_symmetric_and_bounded_by_log_2():
    torch.manual_seed(1)
    a, b = (5 * torch.randn(8, 30)).log_softmax(-1), (5 * torch.randn(8, 30)).log_softmax(-1)
    torch.testing.assert_close(divergence(a, b, "jsd"), divergence(b, a, "jsd"))
    assert (divergence(a, b, "jsd") <= math.log(2) + 1e-6).all()


def test_jsd_endpoints_are_forward_and_reverse_kl():
    # As TRL's generalized_jsd_loss: beta = 0 is KL(teacher || student), beta = 1 is KL(student || teacher).
    torch.manual_seed(2)
    lp, lq = (3 * torch.randn(8, 30)).log_softmax(-1), (3 * torch.randn(8, 30)).log_softmax(-1)
    forward = (lp.exp() * (lp - lq)).sum(-1)
    reverse = (lq.exp() * (lq - lp)).sum(-1)
    torch.testing.assert_close(divergence(lp, lq, "jsd", 0.0), forward)
    torch.testing.assert_close(divergence(lp, lq, "jsd", 1.0), reverse)
    assert forward.min() > 0.1 and reverse.min() > 0.1  # not the 0 a mixture equal to p or q gives
    labels = torch.arange(8)
    for beta, kind in ((0.0, "forward_kl"), (1.0, "reverse_kl")):
        jsd = distillation_loss(lq, lp, labels, alpha=0.0, kind="jsd", beta=beta)["loss"]
        torch.testing.assert_close(jsd, distillation_loss(lq, lp, labels, alpha=0.0, kind=kind)["loss"])


def test_jsd_endpoints_are_the_limits_of_the_scaled_jsd():
    # JSD(beta) = beta * KL(p || q) + O(beta^2) near 0 and (1 - beta) * KL(q || p) + O((1 - beta)^2)
    # near 1: the endpoints continue JSD / beta and JSD / (1 - beta), while (0, 1) keeps TRL's values.
    torch.manual_seed(3)
    lp, lq = (
        torch.randn(8, 30, dtype=torch.float64).log_softmax(-1),
        torch.randn(8, 30, dtype=torch.float64).log_softmax(-1),
    )
    eps = 1e-4
    near_0, near_1 = divergence(lp, lq, "jsd", eps) / eps, divergence(lp, lq, "jsd", 1 - eps) / eps
    torch.testing.assert_close(near_0, divergence(lp, lq, "jsd", 0.0), rtol=1e-3, atol=0)
    torch.testing.assert_close(near_1, divergence(lp, lq, "jsd", 1.0), rtol=1e-3, atol=0)


def _batch(seed=0, B=3, T=7, V=11):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(B, T, V, generator=g, requires_grad=True)
    teacher = torch.randn(B, T, V, generator=g)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, :3] = IGNORE_INDEX  # a prompt
    labels[2, 5:] = IGNORE_INDEX  # padding
    return student, teacher, labels


def test_alpha_one_is_plain_cross_entropy_on_counted_tokens():
    student, teacher, labels = _batch()
    out = distillation_loss(student, teacher, labels, alpha=1.0)
    expected = F.cross_entropy(student.reshape(-1, 11), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(out["loss"], expected)


def test_temperature_scales_the_divergence_by_t_squared():
    student, teacher, labels = _batch()
    out = distillation_loss(student, teacher, labels, alpha=0.0, temperature=2.0, kind="forward_kl")
    mask = labels != IGNORE_INDEX
    d = divergence((teacher[mask] / 2).log_softmax(-1), (student[mask] / 2).log_softmax(-1), "forward_kl").mean()
    torch.testing.assert_close(out["loss"], 4.0 * d)
    torch.testing.assert_close(out["divergence"], d)


@pytest.mark.parametrize("kind", KINDS)
def test_accumulated_micro_batches_equal_one_large_batch(kind):
    student, teacher, labels = _batch(seed=2, B=4)
    full = distillation_loss(student, teacher, labels, alpha=0.3, kind=kind)["loss"]
    total = int((labels != IGNORE_INDEX).sum())
    parts = [
        distillation_loss(
            student[i : i + 2], teacher[i : i + 2], labels[i : i + 2], alpha=0.3, kind=kind, num_items=total
        )["loss"]
        for i in (0, 2)
    ]
    torch.testing.assert_close(parts[0] + parts[1], full)


def test_chunking_changes_neither_loss_nor_gradient():
    student, teacher, labels = _batch(seed=3)
    a = distillation_loss(student, teacher, labels, chunk_size=1)["loss"]
    (grad_a,) = torch.autograd.grad(a, student)
    b = distillation_loss(student, teacher, labels, chunk_size=10_000)["loss"]
    (grad_b,) = torch.autograd.grad(b, student)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(grad_a, grad_b)
    assert grad_a[0, :3].abs().max() == 0  # prompt positions get no gradient


def test_low_precision_logits_are_computed_in_float32():
    student, teacher, labels = _batch(seed=4)
    exact = distillation_loss(student.detach(), teacher, labels)["loss"]
    half = distillation_loss(student.detach().bfloat16(), teacher.bfloat16(), labels)["loss"]
    assert half.dtype == torch.float32
    assert abs(half.item() - exact.item()) < 0.05


def test_topk_with_the_whole_vocabulary_equals_dense_teacher():
    student, teacher, labels = _batch(seed=5)
    logp = teacher.log_softmax(-1)
    values, indices = logp.topk(11, dim=-1)
    dense = distillation_loss(student, teacher, labels, alpha=0.2, kind="reverse_kl")["loss"]
    cached = distillation_loss(student, TopK(indices, values), labels, alpha=0.2, kind="reverse_kl")["loss"]
    torch.testing.assert_close(cached, dense, atol=1e-4, rtol=1e-4)


def test_topk_buckets_keep_the_rest_mass():
    log_q = torch.tensor([[0.1, 0.2, 0.3, 0.4]]).log()
    teacher = TopK(torch.tensor([[3, 0]]), torch.tensor([[0.7, 0.2]]).log())
    log_p, log_qb = topk_buckets(log_q, teacher)
    torch.testing.assert_close(log_p.exp(), torch.tensor([[0.7, 0.2, 0.1]]))
    torch.testing.assert_close(log_qb.exp(), torch.tensor([[0.4, 0.1, 0.5]]))


def test_out_of_range_settings_are_sentences():
    student, teacher, labels = _batch()
    with pytest.raises(ValueError, match=r"alpha must be in the range \[0.0, 1.0\]"):
        distillation_loss(student, teacher, labels, alpha=1.5)
    with pytest.raises(ValueError, match="temperature must be positive"):
        distillation_loss(student, teacher, labels, temperature=0)
    with pytest.raises(ValueError, match="differ in shape"):
        distillation_loss(student, teacher[..., :5], labels)
