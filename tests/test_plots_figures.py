"""The PNG figures: they exist, have a real size and more than one colour; bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest

from sparse.errors import UserError
from sparse.evaluation import plots


def assert_real_png(path, min_w=300, min_h=200):
    import matplotlib.image as mpimg

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    h, w = img.shape[:2]
    assert w >= min_w and h >= min_h, (w, h)
    colours = np.unique(img.reshape(-1, img.shape[-1]).round(3), axis=0)
    assert len(colours) > 10, f"{path} has only {len(colours)} colours"


def test_training_curves(tmp_path):
    records = [{"step": s, "ranking_loss": 2.0 / (s + 1), "flops_loss": 0.1 * s, "doc_length": 300 - s,
                "lambda": 0.01} for s in range(0, 40, 2)]
    records.append({"step": 41, "train_runtime": 12.0})  # summary records without the keys are skipped
    path = plots.plot_training_curves(records, str(tmp_path / "curves.png"), title="demo")
    assert_real_png(path, min_w=800)


def test_training_curves_skips_absent_series_and_refuses_empty(tmp_path):
    only_loss = [{"step": 1, "ranking_loss": 1.0}, {"step": 2, "ranking_loss": 0.5}]
    assert_real_png(plots.plot_training_curves(only_loss, str(tmp_path / "a.png")))
    with pytest.raises(UserError, match="ranking_loss"):
        plots.plot_training_curves([{"step": 1, "loss": 1.0}], str(tmp_path / "b.png"))


def test_before_after(tmp_path):
    before = {"NDCG@10": 0.61, "Recall@100": 0.9, "flops": 3.2, "d_length": 220.0, "q_length": 9.0}
    after = {"NDCG@10": 0.66, "Recall@100": 0.92, "flops": 2.1, "d_length": 150.0, "q_length": 9.0}
    path = plots.plot_before_after(before, after, str(tmp_path / "ba.png"),
                                   metrics=[("NDCG@10", "NDCG@10"), ("flops", "FLOPS"), ("d_length", "doc len")])
    assert_real_png(path)
    with pytest.raises(UserError):
        plots.plot_before_after({"x": None}, {"x": 1.0}, str(tmp_path / "none.png"), metrics=[("x", "x")])


def test_pareto_front_and_plot(tmp_path):
    assert plots.pareto_front([(1, 0.3), (2, 0.5), (3, 0.4), (0.5, 0.1), (2, 0.2)]) == [(0.5, 0.1), (1, 0.3), (2, 0.5)]
    rows = [{"method": m, "FLOPS": f, "NDCG@10 avg": n, "run": f"{m}-{i}"}
            for m, base in (("FLOPS baseline", 0.40), ("l0 mask", 0.45))
            for i, (f, n) in enumerate([(0.5, base), (1.0, base + 0.02), (2.0, base + 0.03), (1.5, base - 0.05)])]
    path = plots.plot_pareto(rows, str(tmp_path / "p.png"), x="FLOPS", y="NDCG@10 avg", label="run")
    assert_real_png(path, min_w=600)
    with pytest.raises(UserError, match="lack a number"):
        plots.plot_pareto(rows + [{"method": "x", "FLOPS": None, "NDCG@10 avg": 0.1}], str(tmp_path / "q.png"),
                          x="FLOPS", y="NDCG@10 avg")
