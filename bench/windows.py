"""Long documents: truncation at 256 and 512 tokens vs token windows of 256, side by side in one run.

    .venv/bin/python bench/windows.py [--stride 192] [--queries N --distractors M] [--batch_size 32]

SciFact test (``sparse.assets``: ``../shared/data/beir/scifact``) with the offline SPLADE model and
the MS MARCO IDF, each setting evaluated by ``evaluate_dataset`` (embedded engine, exact) with no
corpus cache, so every encode time is measured:

* baseline: truncation at 512 tokens (the default), and at 256;
* ours: windows of 256 tokens every ``stride`` tokens, ``max_window`` (each window indexed, a
  document scores its best window) and ``max_pool`` (one vector, the elementwise max of the windows').

Printed: NDCG@10, Recall@100, encode seconds, the windows encoded, and per setting the NDCG@10
difference and the encode-time ratio against truncation at 512. ``--queries`` / ``--distractors``
evaluate a subset instead (the first N test queries, their judged documents and M others;
``sparse.reproduce.subset``), for a dry run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sparse.assets import beir_dataset, idf_file, splade_model  # noqa: E402
from sparse.evaluation.beir_eval import EvalOptions, evaluate_dataset  # noqa: E402
from sparse.evaluation.report import markdown_table  # noqa: E402
from sparse.modeling.encoder import SparseEncoder  # noqa: E402
from sparse.reproduce.subset import make_subset  # noqa: E402

BASELINE = "truncate 512"


def settings(stride: int) -> dict[str, dict]:
    """Setting name -> the EvalOptions fields that make it."""
    return {BASELINE: {"max_length": 512},
            "truncate 256": {"max_length": 256},
            f"windows 256/{stride} max_window": {"window_length": 256, "window_stride": stride,
                                                 "window_combine": "max_window"},
            f"windows 256/{stride} max_pool": {"window_length": 256, "window_stride": stride,
                                               "window_combine": "max_pool"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stride", type=int, default=192, help="window stride in tokens (64 tokens of overlap)")
    parser.add_argument("--queries", type=int, default=None, help="a subset: the first N test queries")
    parser.add_argument("--distractors", type=int, default=200, help="with --queries: unjudged documents kept")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--model", default=None, help="a checkpoint (e.g. output/demo/model, with its own idf.json); "
                                                      "default: the offline SPLADE model with the MS MARCO IDF")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    encoder = SparseEncoder.from_pretrained(args.model) if args.model else \
        SparseEncoder.from_pretrained(str(splade_model()), idf_path=str(idf_file()))
    encoder.encode_documents(["a warm-up batch, so the first setting's time is not the start-up's"] * 4)
    with tempfile.TemporaryDirectory(prefix="bench-windows-") as tmp:
        folder = str(beir_dataset("scifact"))
        if args.queries:
            folder = os.path.join(tmp, "beir", "scifact-subset")
            make_subset(str(beir_dataset("scifact")), folder, args.queries, args.distractors, ("test",))
        rows = []
        for name, fields in settings(args.stride).items():
            opts = EvalOptions(batch_size=args.batch_size, progress=False, write_run=False, explain_top_k=0, **fields)
            res = evaluate_dataset(encoder, "scifact", folder, os.path.join(tmp, "out", str(len(rows))), opts)
            rows.append({"setting": name, "NDCG@10": res["metrics"]["NDCG@10"],
                         "Recall@100": res["metrics"]["Recall@100"], "encode s": res["timings"]["encode_corpus_s"],
                         "documents": res["counts"]["documents"],
                         "vectors encoded": res["counts"].get("windows", res["counts"]["documents"]),
                         "d_length": res["sparsity"]["d_length"]})
            print(f"{name}: NDCG@10 {rows[-1]['NDCG@10']:.4f}, encode {rows[-1]['encode s']:.1f} s", flush=True)
    base = rows[0]
    for r in rows:
        r["NDCG@10 vs 512"] = r["NDCG@10"] - base["NDCG@10"]
        r["encode time vs 512"] = f"{r['encode s'] / max(base['encode s'], 1e-9):.2f}x"
    print()
    print(markdown_table(rows, floatfmt=".4f"))


if __name__ == "__main__":
    main()
