"""``python -m sparse.evaluation.sweep`` (``sparse sweep``): one checkpoint, one dataset, a grid of serving
settings, to choose what the index will hold.

    python -m sparse.evaluation.sweep --model_name_or_path M --beir_datasets scifact --output_dir out/sweep \\
        [--max_ratio 0.05 0.1 0.2 0.3] [--top_k 32 64 128] [--alpha_mass 0.7 0.8 0.9] [--abs_value ...] \\
        [--precisions float opensearch seismic impact] [--tolerance 0.005]

The corpus is encoded once (and cached); every setting prunes and stores those vectors as it says
and searches them with the embedded engine. The grid is: no pruning plus every (prune type, value)
given, each at every precision. The reference is no pruning at float precision. A setting is
*within tolerance* when its NDCG@10 >= the reference's - ``tolerance``; among those the sweep
chooses the fewest postings (then the fewest bytes, then the higher NDCG@10) and prints the export
command that writes its pruning into the OpenSearch ingest pipeline.

Writes ``sweep.json`` (every setting's full result), ``sweep.csv``, ``sweep.md`` and ``sweep.png``
(NDCG@10 and Recall@100 against index size) into ``output_dir``.
"""

from __future__ import annotations

import logging
import os
import shlex
from dataclasses import dataclass, replace
from typing import Optional

from sparse.config import Command, ConfigError, key, run_command
from sparse.errors import UserError, check_output_dir, write_text
from sparse.evaluation import plots
from sparse.evaluation.beir_eval import prepare_dataset, serve_dataset
from sparse.evaluation.report import markdown_table, read_json, write_csv, write_json
from sparse.evaluation.runner import check_splits, eval_options, load_model, preflight
from sparse.retrieval.pruning import PRUNE_TYPES, RANGES, value_fits

logger = logging.getLogger("sparse.evaluation.sweep")
FILES = ("sweep.json", "sweep.csv", "sweep.md", "sweep.png")
MARK = "python -m sparse.evaluation.sweep"  # in every sweep.json: only such a folder's files may be replaced
COLUMNS = ("setting", "prune_type", "prune_value", "precision", "NDCG@10", "Recall@100", "postings",
           "postings_saved", "index_bytes", "touched_per_query", "p50_ms", "p99_ms", "within_tolerance", "chosen")
# the index mapping the export writes for each precision (requests/<name>.json)
INDEX_BODY = {"float": "index_rank_features", "opensearch": "index_rank_features",
              "seismic": "index_sparse_vector", "impact": None}


@dataclass(kw_only=True)
class SweepArguments:
    """Options of ``python -m sparse.evaluation.sweep`` (the grid, the tolerance, the output folder)."""

    output_dir: str = key(help="Folder for sweep.json, sweep.csv, sweep.md and sweep.png (created).")
    max_ratio: list[float] = key(help="max_ratio values of the grid.", factory=lambda: [0.05, 0.1, 0.2, 0.3],
                                 nargs="*")
    top_k: list[float] = key(help="top_k values of the grid.", factory=lambda: [32, 64, 128], nargs="*")
    alpha_mass: list[float] = key(help="alpha_mass values of the grid.", factory=lambda: [0.7, 0.8, 0.9], nargs="*")
    abs_value: list[float] = key(help="abs_value values of the grid.", factory=list, nargs="*")
    precisions: list[str] = key(help="Precisions of the grid.", factory=lambda: ["float", "opensearch"],
                                choices="sparse.retrieval.precision:PRECISIONS", nargs="*")
    tolerance: float = key(0.005, "A setting is within tolerance when its NDCG@10 >= the unpruned float "
                                  "model's - tolerance.", low=0)
    overwrite: bool = key(False, "Replace the files of an earlier sweep in output_dir.")


COMMAND = Command(MARK, __doc__.split("\n\n")[1], options=SweepArguments, config=True)


def grid(args: SweepArguments) -> list[tuple[str, Optional[float], str]]:
    """(prune type, value, precision) of every setting, the reference (none, float) first."""
    prunes = [("none", None)] + [(t, float(v)) for t in PRUNE_TYPES[1:] for v in getattr(args, t)]
    precisions = ["float"] + [p for p in dict.fromkeys(args.precisions) if p != "float"]
    return [(t, v, p) for p in precisions for t, v in prunes]


def label(prune_type: str, value: Optional[float], precision: str) -> str:
    """A setting's name in the tables: ``max_ratio 0.1 / opensearch``."""
    return f"{'none' if prune_type == 'none' else f'{prune_type} {value:g}'} / {precision}"


def check_args(cfg, args: SweepArguments) -> str:
    """Every bad input, before anything is written; returns the one dataset's name."""
    for prune_type in PRUNE_TYPES[1:]:
        bad = [v for v in getattr(args, prune_type) if not value_fits(prune_type, v)]
        if bad:
            raise ConfigError(f"--{prune_type} values must be {RANGES[prune_type]}, got {bad[0]:g}")
    if not args.precisions:
        raise ConfigError("--precisions is empty: give at least one of float, opensearch, seismic, impact")
    if cfg.eval.engine != "embedded":
        raise ConfigError("the sweep searches with the embedded engine (it emulates every precision): drop --engine")
    swept = sorted({"doc_prune_type", "doc_prune_value", "index_precision"} & cfg.explicit_keys)
    if swept:
        raise ConfigError(f"the sweep sets {', '.join(swept)} itself: give the grid with --max_ratio, --top_k, "
                          f"--alpha_mass, --abs_value and --precisions")
    if not cfg.model.model_name_or_path:
        raise ConfigError("--model_name_or_path is required")
    datasets = [s.strip() for s in str(cfg.data.beir_datasets).split(",") if s.strip()]
    if "beir_datasets" not in cfg.explicit_keys or len(datasets) != 1:
        raise ConfigError("the sweep evaluates one dataset: give it with --beir_datasets NAME")
    check_output_dir("--output_dir", args.output_dir)
    present = [f for f in FILES if os.path.exists(os.path.join(args.output_dir, f))]
    if present:
        if not args.overwrite:
            raise UserError(f"--output_dir {args.output_dir} already holds {', '.join(present)}; pass --overwrite "
                            f"or choose another folder")
        if not _written_by_sweep(os.path.join(args.output_dir, "sweep.json")):
            raise UserError(f"--output_dir {args.output_dir} holds {', '.join(present)} that no earlier sweep wrote; "
                            f"choose another folder")
    return datasets[0]


def _written_by_sweep(path: str) -> bool:
    try:
        return read_json(path).get("command") == MARK
    except (OSError, ValueError, AttributeError):
        return False


def mark_and_choose(rows: list[dict], tolerance: float) -> dict:
    """Mark the rows within ``tolerance`` NDCG@10 of the reference (row 0) and the chosen one; return it."""
    ref = rows[0]
    for r in rows:
        r["within_tolerance"] = r["NDCG@10"] >= ref["NDCG@10"] - tolerance
        r["postings_saved"] = 1.0 - r["postings"] / ref["postings"] if ref["postings"] else 0.0
        r["chosen"] = False
    best = min((r for r in rows if r["within_tolerance"]),
               key=lambda r: (r["postings"], r["index_bytes"], -r["NDCG@10"]))
    best["chosen"] = True
    return best


def export_command(model: str, output_dir: str, row: dict) -> str:
    """The export command that writes ``row``'s pruning into the ingest pipeline."""
    words = ["python", "-m", "sparse.export", model, "--to", "opensearch", "--output",
             os.path.join(output_dir, "export")]
    if row["prune_type"] != "none":
        words += ["--prune_type", row["prune_type"], "--prune_ratio", f"{row['prune_value']:g}"]
    return shlex.join(words)


def serving_advice(row: dict) -> str:
    """Which index the chosen precision means, in words."""
    body = INDEX_BODY[row["precision"]]
    if body is None:
        return "precision impact is an Anserini/pyserini impact index (round(w x impact_scale)); the export writes no body for it"
    return f"create the index with requests/{body}.json of the export"


def run_sweep(cfg, args: SweepArguments) -> dict:
    """Evaluate the grid, write the four files, print the choice; returns sweep.json's content."""
    from sparse.assets import beir_dataset, check_beir_names
    from sparse.corpus import check_model_path

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    name = check_args(cfg, args)
    base = eval_options(cfg, precisions=args.precisions)
    check_beir_names([name], cfg.data.beir_dir)
    check_model_path(cfg.model.model_name_or_path)
    folder = str(beir_dataset(name, cfg.data.beir_dir))
    check_splits({name: folder}, cfg.eval.eval_split)
    preflight(cfg, [("model", cfg.model.model_name_or_path)], {name: folder}, yaml_mode=False)

    encoder = load_model(cfg, cfg.model.model_name_or_path, yaml_mode=False)
    prepared = prepare_dataset(encoder, name, folder, base)
    rows, results = [], []
    for prune_type, value, precision in grid(args):
        opts = replace(base, doc_prune_type=prune_type, doc_prune_value=value, progress=False,
                       engine_opts={**base.engine_opts, "precision": precision, "progress": False})
        result, _, _ = serve_dataset(encoder, prepared, opts)
        results.append(result)
        rows.append({"setting": label(prune_type, value, precision), "prune_type": prune_type, "prune_value": value,
                     "precision": precision, "NDCG@10": result["metrics"]["NDCG@10"],
                     "Recall@100": result["metrics"]["Recall@100"], **{k: result["index"][k] for k in (
                         "postings", "index_bytes", "touched_per_query")},
                     "p50_ms": result["latency"]["p50_ms"], "p99_ms": result["latency"]["p99_ms"]})
        logger.info("%s: NDCG@10 %.4f  postings %d", rows[-1]["setting"], rows[-1]["NDCG@10"], rows[-1]["postings"])
    chosen = mark_and_choose(rows, args.tolerance)
    command = export_command(cfg.model.model_name_or_path, args.output_dir, chosen)
    summary = {"command": MARK, "model": cfg.model.model_name_or_path, "dataset": name,
               "tolerance": args.tolerance, "reference": rows[0], "chosen": chosen, "export_command": command,
               "advice": serving_advice(chosen), "rows": rows, "results": results}
    write_outputs(args.output_dir, summary)
    print(choice_text(summary))
    return summary


def choice_text(summary: dict) -> str:
    """What the sweep prints and puts under its table: the choice and the export command."""
    ref, best = summary["reference"], summary["chosen"]
    lines = [f"reference (no pruning, float): NDCG@10 {ref['NDCG@10']:.4f}, {ref['postings']} postings",
             f"chosen within {summary['tolerance']:g} NDCG@10: {best['setting']}: NDCG@10 {best['NDCG@10']:.4f}, "
             f"{best['postings']} postings ({best['postings_saved']:.1%} fewer), {best['index_bytes']} bytes"]
    if best is ref or best["prune_type"] == "none":
        lines.append("no pruned setting stays within the tolerance; the table lists the trade-offs")
    lines += ["export command:", f"  {summary['export_command']}", f"then {summary['advice']}"]
    return "\n".join(lines)


def write_outputs(out_dir: str, summary: dict) -> None:
    """sweep.json, sweep.csv, sweep.md and sweep.png."""
    os.makedirs(out_dir, exist_ok=True)
    rows = summary["rows"]
    write_json(os.path.join(out_dir, "sweep.json"), summary)
    write_csv(os.path.join(out_dir, "sweep.csv"), rows, COLUMNS)
    shown = [{**r, "within_tolerance": "yes" if r["within_tolerance"] else "",
              "chosen": "**chosen**" if r["chosen"] else ""} for r in rows]
    write_text(os.path.join(out_dir, "sweep.md"),
               f"# Serving sweep: {summary['dataset']}\n\nModel: `{summary['model']}`. Within tolerance: NDCG@10 >= "
               f"the unpruned float model's - {summary['tolerance']:g}. Index sizes: docs/evaluation.md"
               f"#index-size-and-speed.\n\n" + markdown_table(shown, COLUMNS)
               + "\n```\n" + choice_text(summary) + "\n```\n\n![sweep](sweep.png)\n")
    plots.plot_serving_sweep(rows, os.path.join(out_dir, "sweep.png"), rows[0]["NDCG@10"] - summary["tolerance"],
                             title=f"{summary['dataset']}: serving settings")


def main(argv: Optional[list[str]] = None):
    """``python -m sparse.evaluation.sweep``: the one command-line reader, then ``run_sweep``."""
    return run_command(COMMAND, lambda cfg, args: run_sweep(cfg, args) and None, argv)


if __name__ == "__main__":
    main()
