"""Each loss and regularizer against an independent, loop-based computation."""

from __future__ import annotations

import math

import pytest
import torch

from sparse.losses import (RankingLoss, flops, flops_lambda, infonce_loss, kldiv_loss, l0_mask, marginmse_loss,
                           student_scores)


def _rand(b=3, k=3, v=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(b, v, generator=g)
    d = torch.relu(torch.rand(b * k, v, generator=g) - 0.3)
    return q, d, k


def dot(a, b):
    return sum(float(x) * float(y) for x, y in zip(a, b))


def test_reference_worked_l0_example():
    r = torch.tensor([[1, .2, 0, 0], [.5, .6, .7, .8]])
    assert flops(r, groups=2) == pytest.approx(2.78, abs=1e-6)
    assert flops(r, groups=2, threshold=2) == pytest.approx(1.74, abs=1e-6)
    # strict '>': a threshold equal to the longer doc's length masks both
    assert flops(r, groups=2, threshold=4) == pytest.approx(0.0)


def test_flops_grouped_and_mean_forms_loop():
    r = torch.relu(torch.randn(6, 5, generator=torch.Generator().manual_seed(3)))
    r[1] = 0.0
    n, g, v = 3, 2, 5
    grouped = sum(sum(((1 / n) * sum(abs(float(r[i * g + p, j])) for i in range(n))) ** 2 for j in range(v))
                  for p in range(g))
    assert flops(r, groups=2).item() == pytest.approx(grouped, rel=1e-5)
    mean = sum(((1 / 6) * sum(abs(float(r[i, j])) for i in range(6))) ** 2 for j in range(v))
    assert flops(r, groups=2, form="mean").item() == pytest.approx(mean, rel=1e-5)
    # threshold: rows with more than 3 non-zeros only; denominator stays N
    lens = [(r[i] != 0).sum().item() for i in range(6)]
    keep = [1.0 if l > 3 else 0.0 for l in lens]
    masked = sum(sum(((1 / n) * sum(keep[i * g + p] * float(r[i * g + p, j]) for i in range(n))) ** 2
                     for j in range(v)) for p in range(g))
    assert flops(r, groups=2, threshold=3).item() == pytest.approx(masked, rel=1e-5)
    assert torch.equal(l0_mask(r, 3), torch.tensor(keep))


def test_l0_mask_has_no_gradient_through_the_count():
    r = torch.tensor([[1.0, .2, 0, 0], [.5, .6, .7, .8]], requires_grad=True)
    flops(r, groups=2, threshold=2).backward()
    assert torch.equal(r.grad[0], torch.zeros(4))  # masked doc: no FLOPS gradient
    assert torch.allclose(r.grad[1], 2 * torch.tensor([.5, .6, .7, .8]))


def test_flops_lambda_quadratic_warmup():
    assert flops_lambda(0, 0.08, 40000) == pytest.approx(0.08 / 40000 ** 2)
    assert flops_lambda(19999, 0.08, 40000) == pytest.approx(0.08 * 0.25)
    assert flops_lambda(39999, 0.08, 40000) == pytest.approx(0.08)
    assert flops_lambda(50000, 0.08, 40000) == 0.08


def test_student_scores_shapes_and_values():
    q, d, k = _rand()
    s = student_scores(q, d, in_batch=False)
    for i in range(3):
        for j in range(k):
            assert s[i, j].item() == pytest.approx(dot(q[i], d[i * k + j]), rel=1e-5)
    full = student_scores(q, d, in_batch=True)
    assert full.shape == (3, 9) and full[2, 4].item() == pytest.approx(dot(q[2], d[4]), rel=1e-5)
    # one query (the reference's .squeeze() bug) still gives (1, k)
    assert student_scores(q[:1], d[:k], False).shape == (1, k)


def _logsumexp(xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def test_infonce_grouped_and_in_batch():
    q, d, k = _rand()
    b = 3
    grouped = sum(-(dot(q[i], d[i * k]) - _logsumexp([dot(q[i], d[i * k + j]) for j in range(k)]))
                  for i in range(b)) / b
    assert infonce_loss(q, d, False).item() == pytest.approx(grouped, rel=1e-5)
    inb = sum(-(dot(q[i], d[i * k]) - _logsumexp([dot(q[i], d[n]) for n in range(b * k)])) for i in range(b)) / b
    assert infonce_loss(q, d, True).item() == pytest.approx(inb, rel=1e-5)
    # reference: other queries' positives are excluded from the negatives
    ref = sum(-(dot(q[i], d[i * k]) - _logsumexp(
        [dot(q[i], d[n]) for n in range(b * k) if n % k != 0 or n == i * k])) for i in range(b)) / b
    assert infonce_loss(q, d, True, exclude_other_positives=True).item() == pytest.approx(ref, rel=1e-5)


def test_kldiv_batchmean_with_temperature():
    s = torch.tensor([[2.0, 1.0, 0.0], [0.5, 0.5, 3.0]])
    t = torch.tensor([[30.0, 10.0, 0.0], [0.0, 15.0, 30.0]])
    tau = 2.0
    total = 0.0
    for i in range(2):
        zs = _logsumexp([x / tau for x in s[i].tolist()])
        zt = _logsumexp([x / tau for x in t[i].tolist()])
        for j in range(3):
            lpt = t[i, j].item() / tau - zt
            lps = s[i, j].item() / tau - zs
            total += math.exp(lpt) * (lpt - lps)
    assert kldiv_loss(s, t, tau).item() == pytest.approx(total / 2, rel=1e-5)
    with pytest.raises(ValueError, match="do not match"):
        kldiv_loss(s, t[:, :2])


def test_marginmse():
    s = torch.tensor([[2.0, 1.0, 0.0], [0.5, 0.5, 3.0]])
    t = torch.tensor([[3.0, 1.0, 2.0], [1.0, 0.0, 2.0]])
    tau = 0.5
    terms = [((s[i, 0] - s[i, j]) / tau - (t[i, 0] - t[i, j]) / tau).item() ** 2 for i in range(2) for j in (1, 2)]
    assert marginmse_loss(s, t, tau).item() == pytest.approx(sum(terms) / 4, rel=1e-5)


def test_ranking_loss_combines_weights():
    q, d, k = _rand()
    t = torch.rand(3, k)
    s = student_scores(q, d, False)
    raw = RankingLoss(["infonce", "kldiv", "marginmse"], weights=[1.0, 0.5, 2.0], ranking_loss_weight=3.0,
                      score_norm="none")
    total, parts = raw(q, d, t)
    expected = 3.0 * (infonce_loss(q, d) + 0.5 * kldiv_loss(s, t) + 2.0 * marginmse_loss(s, t))
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    # default score_norm "std": the distillation terms see the student rows with the teacher's spread
    rl = RankingLoss(["infonce", "kldiv", "marginmse"], weights=[1.0, 0.5, 2.0], ranking_loss_weight=3.0)
    total, parts = rl(q, d, t)
    s_std = (s - s.mean(1, keepdim=True)) / (s.std(1, unbiased=False, keepdim=True) + 1e-8) \
        * t.std(1, unbiased=False, keepdim=True)
    expected = 3.0 * (infonce_loss(q, d) + 0.5 * kldiv_loss(s_std, t) + 2.0 * marginmse_loss(s_std, t))
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(parts) == {"loss_infonce", "loss_kldiv", "loss_marginmse"}
    with pytest.raises(ValueError, match="needs teacher scores"):
        RankingLoss(["kldiv"])(q, d, None)
