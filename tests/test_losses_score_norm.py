"""score_norm="std": student rows standardized to the teacher's spread (independent numpy check)."""

import numpy as np
import pytest
import torch

from sparse.losses.ranking import RankingLoss, normalize_student


def _numpy_norm(s, t):
    s = np.asarray(s, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    z = (s - s.mean(axis=1, keepdims=True)) / (s.std(axis=1, keepdims=True) + 1e-8)
    return z * t.std(axis=1, keepdims=True)


def test_normalize_student_matches_numpy():
    rng = np.random.default_rng(0)
    s = rng.normal(10, 20, size=(3, 5))
    t = rng.uniform(0, 30, size=(3, 5))
    got = normalize_student(torch.tensor(s), torch.tensor(t)).numpy()
    np.testing.assert_allclose(got, _numpy_norm(s, t), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got.std(axis=1), t.std(axis=1), rtol=1e-5)


@pytest.mark.parametrize("loss", ["kldiv", "marginmse"])
def test_std_norm_makes_the_loss_blind_to_the_score_scale(loss):
    """Shrinking every document weight (S -> c S) changes nothing with "std", a lot with "none"."""
    torch.manual_seed(0)
    q = torch.rand(2, 7, dtype=torch.float64)
    d = torch.rand(6, 7, dtype=torch.float64)
    teacher = torch.rand(2, 3, dtype=torch.float64) * 30
    std_loss = RankingLoss([loss], score_norm="std")
    raw_loss = RankingLoss([loss], score_norm="none")
    full, _ = std_loss(q, d, teacher)
    shrunk, _ = std_loss(q, d * 0.5, teacher)
    assert float(full) == pytest.approx(float(shrunk), rel=1e-6)
    assert abs(float(raw_loss(q, d, teacher)[0]) - float(raw_loss(q, d * 0.5, teacher)[0])) > 1e-2
    # the gradient along the global scale vanishes: d/dc L(c d) at c = 1 is ~0
    c = torch.ones((), dtype=torch.float64, requires_grad=True)
    value, _ = std_loss(q, d * c, teacher)
    value.backward()
    assert abs(float(c.grad)) < 1e-4  # eps keeps a trace; the raw loss below is >1e-2
    c_raw = torch.ones((), dtype=torch.float64, requires_grad=True)
    raw_loss(q, d * c_raw, teacher)[0].backward()
    assert abs(float(c_raw.grad)) > 1e-2


def test_unknown_score_norm_is_an_error():
    with pytest.raises(ValueError, match="score_norm"):
        RankingLoss(["kldiv"], score_norm="zscore")
