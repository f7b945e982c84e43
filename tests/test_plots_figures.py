"""The PNG figures: what they plot (lines, bars, points, labels read back from the matplotlib
figure as it is saved: ``captured_figures`` in conftest) equals the input; the file is a real,
non-blank PNG; bad input is refused."""

from __future__ import annotations

import os

import pytest

from sparse.errors import UserError
from sparse.evaluation import plots


def _one(captured, path):
    assert list(captured) == [os.path.abspath(path)]
    return captured[os.path.abspath(path)]


def test_training_curves(tmp_path, captured_figures, real_png):
    records = [{"step": s, "ranking_loss": 2.0 / (s + 1), "flops_loss": 0.1 * s, "doc_length": 300 - s,
                "lambda": 0.01} for s in range(0, 40, 2)]
    records.append({"step": 41, "train_runtime": 12.0})  # summary records without the keys are skipped
    records = records[::-1]  # any order in, by step out
    path = plots.plot_training_curves(records, str(tmp_path / "curves.png"), title="demo")
    real_png(path, min_w=800)
    fig = _one(captured_figures, path)
    assert fig["suptitle"] == "demo"
    steps = list(range(0, 40, 2))
    want = [("ranking loss", [2.0 / (s + 1) for s in steps]), ("FLOPS loss", [0.1 * s for s in steps]),
            ("mean document length", [300.0 - s for s in steps])]
    assert [ax["title"] for ax in fig["axes"]] == [t for t, _ in want]
    for ax, (_, ys) in zip(fig["axes"], want, strict=True):
        assert ax["xlabel"] == "step" and len(ax["lines"]) == 1
        assert ax["lines"][0]["x"] == steps
        assert ax["lines"][0]["y"] == pytest.approx(ys)


def test_training_curves_skips_absent_series_and_refuses_empty(tmp_path, captured_figures, real_png):
    only_loss = [{"step": 2, "ranking_loss": 0.5}, {"step": 1, "ranking_loss": 1.0}, {"step": 3, "ranking_loss": None}]
    path = plots.plot_training_curves(only_loss, str(tmp_path / "a.png"),
                                      series=[("ranking_loss", "loss"), ("doc_nnz", "length")])
    real_png(path)
    fig = _one(captured_figures, path)
    assert [ax["title"] for ax in fig["axes"]] == ["loss"] and fig["suptitle"] is None
    assert fig["axes"][0]["lines"][0]["x"] == [1.0, 2.0] and fig["axes"][0]["lines"][0]["y"] == [1.0, 0.5]
    with pytest.raises(UserError, match="ranking_loss"):
        plots.plot_training_curves([{"step": 1, "loss": 1.0}], str(tmp_path / "b.png"))
    assert not (tmp_path / "b.png").exists()


def test_before_after(tmp_path, captured_figures, real_png):
    before = {"NDCG@10": 0.61, "Recall@100": 0.9, "flops": 3.2, "d_length": 220.0, "q_length": 9.0}
    after = {"NDCG@10": 0.66, "Recall@100": 0.92, "flops": 2.1, "d_length": 150.0, "q_length": 9.0}
    metrics = [("NDCG@10", "NDCG@10"), ("flops", "FLOPS"), ("d_length", "doc len")]
    path = plots.plot_before_after(before, after, str(tmp_path / "ba.png"), metrics=metrics, title="t")
    real_png(path)
    fig = _one(captured_figures, path)
    assert fig["suptitle"] == "t" and [ax["title"] for ax in fig["axes"]] == ["NDCG@10", "FLOPS", "doc len"]
    for ax, (key, _) in zip(fig["axes"], metrics, strict=True):
        assert [b["height"] for b in ax["bars"]] == pytest.approx([before[key], after[key]])
        assert [b["x"] for b in ax["bars"]] == pytest.approx([0, 1])
        assert ax["xticklabels"] == ["zero-shot", "fine-tuned"]
        assert len({b["color"] for b in ax["bars"]}) == 2
    # each bar is annotated with its value
    assert [t["text"] for t in fig["axes"][0]["texts"]] == ["0.6100", "0.6600"]
    assert [t["text"] for t in fig["axes"][1]["texts"]] == ["3.20", "2.10"]
    assert [t["text"] for t in fig["axes"][2]["texts"]] == ["220", "150"]
    # a metric without a number on both sides is left out; none at all is refused
    path = plots.plot_before_after({"a": 1.0, "b": None}, {"a": 2.0, "b": 1.0}, str(tmp_path / "ab.png"))
    assert [ax["title"] for ax in captured_figures[os.path.abspath(path)]["axes"]] == ["a"]
    with pytest.raises(UserError):
        plots.plot_before_after({"x": None}, {"x": 1.0}, str(tmp_path / "none.png"), metrics=[("x", "x")])


def test_pareto_front_and_plot(tmp_path, captured_figures, real_png):
    assert plots.pareto_front([(1, 0.3), (2, 0.5), (3, 0.4), (0.5, 0.1), (2, 0.2)]) == [(0.5, 0.1), (1, 0.3), (2, 0.5)]
    points = [(0.5, 0.0), (1.0, 0.02), (2.0, 0.03), (1.5, -0.05)]
    rows = [{"method": m, "FLOPS": f, "NDCG@10 avg": base + dn, "run": f"{m}-{i}"}
            for m, base in (("FLOPS baseline", 0.40), ("l0 mask", 0.45)) for i, (f, dn) in enumerate(points)]
    path = plots.plot_pareto(rows, str(tmp_path / "p.png"), x="FLOPS", y="NDCG@10 avg", label="run")
    real_png(path, min_w=600)
    (ax,) = _one(captured_figures, path)["axes"]
    assert ax["legend"] == ["FLOPS baseline (4)", "l0 mask (4)"] and ax["legend_title"] == "method"
    assert ax["xscale"] == "linear"  # max/min = 4
    assert len(ax["lines"]) == len(ax["scatter"]) == 2  # one line and one hollow point per method
    for line, scatter, base in zip(ax["lines"], ax["scatter"], (0.40, 0.45), strict=True):
        # the line joins the group's Pareto front cheapest first; the dominated run is hollow
        assert line["x"] == [0.5, 1.0, 2.0] and line["y"] == pytest.approx([base, base + 0.02, base + 0.03])
        assert scatter["points"] == [pytest.approx([1.5, base - 0.05])] and not scatter["filled"]
        assert scatter["edgecolor"] == line["color"]
    assert ax["lines"][0]["color"] != ax["lines"][1]["color"]
    assert sorted((t["text"], tuple(t["xy"])) for t in ax["texts"]) == \
        sorted((r["run"], pytest.approx((r["FLOPS"], r["NDCG@10 avg"]))) for r in rows)
    # a wide FLOPS range switches to a log axis
    wide = [{"method": "m", "FLOPS": f, "NDCG@10 avg": 0.1 * i} for i, f in enumerate([0.1, 1.0, 30.0])]
    path = plots.plot_pareto(wide, str(tmp_path / "w.png"), x="FLOPS", y="NDCG@10 avg")
    assert captured_figures[os.path.abspath(path)]["axes"][0]["xscale"] == "log"
    with pytest.raises(UserError, match="lack a number"):
        plots.plot_pareto(rows + [{"method": "x", "FLOPS": None, "NDCG@10 avg": 0.1}], str(tmp_path / "q.png"),
                          x="FLOPS", y="NDCG@10 avg")
