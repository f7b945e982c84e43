"""The ``python -m sparse.export`` command line: parse, load the checkpoint, write one target, report."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from typing import Optional

from sparse.config import Command, key, run_command
from sparse.errors import UserError, check_output_dir, write_text
from sparse.retrieval.pruning import check_prune

TARGETS = ("opensearch", "sentence-transformers", "onnx")
# a few varied sentences for the weight-range report when no corpus is given
SAMPLE_TEXTS = [
    "Vitamin D deficiency is associated with lower bone mineral density in older adults.",
    "The central bank raised interest rates by a quarter point to curb inflation.",
    "Install the package with pip and run the test suite before opening a pull request.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The museum reopened after a two-year renovation of its medieval galleries.",
    "Randomized controlled trials showed no significant difference in mortality between the groups.",
    "A sparse retriever scores documents by the dot product of vocabulary-sized vectors.",
    "Heavy rainfall caused flooding across the northern provinces on Tuesday.",
    "The enzyme catalyses the hydrolysis of ATP, releasing energy for muscle contraction.",
    "Quarterly revenue grew twelve percent, driven by cloud services and advertising.",
    "Symptoms include fever, dry cough and fatigue lasting more than a week.",
    "The striker scored twice in the second half to secure the championship title.",
]


@dataclass(kw_only=True)
class ExportArguments:
    """Options of ``python -m sparse.export``."""

    checkpoint: Optional[str] = key(None, "Checkpoint directory (a training output or checkpoint-N).", positional=True)
    to: Optional[str] = key(None, "What to write.", choices=TARGETS)
    output: str = key(help="Output directory (created; must be empty or absent, unless --overwrite).")
    name: Optional[str] = key(None, "Model name; null: the checkpoint folder's name.")
    version: str = key("1.0.0", "Model version for ml-commons.")
    url_base: Optional[str] = key(None, "Where the cluster downloads the zips from (register by URL); null: "
                                        "file:// URLs of the written zips.")
    license: str = key("apache-2.0", "Licence id for the model card.")  # noqa: A003
    results: Optional[list[str]] = key(None, "Evaluation results files or folders for the card (added to the ones "
                                             "found beside the checkpoint); may be repeated.")
    sample_corpus: Optional[str] = key(None, "A BEIR corpus.jsonl (or a text file, one document per line) for the "
                                             "weight-range report; null: 12 built-in sentences.")
    sample_size: int = key(200, "Documents read from sample_corpus.", low=1)
    no_onnx: bool = key(False, "--to opensearch: skip the ONNX variant.")
    prune_type: str = key("none", "--to opensearch: the ingest pipeline's document pruning (sparse_encoding "
                                  "prune_type); none: the model's own prune_ratio, if any.",
                          choices="sparse.retrieval.pruning:PRUNE_TYPES")
    prune_ratio: Optional[float] = key(None, "The pipeline's prune_ratio for --prune_type: max_ratio and alpha_mass "
                                             "in [0, 1), top_k an integer >= 1, abs_value >= 0.")
    register: Optional[str] = key(None, "Register, deploy and try the exported OpenSearch models on this cluster "
                                        "URL (credentials from OPENSEARCH_USER / OPENSEARCH_PASSWORD).")
    insecure: bool = key(False, "--register: do not verify TLS certificates.")
    overwrite: bool = key(False, "Replace an existing output directory written by an earlier export.")


COMMAND = Command("python -m sparse.export", """Export a checkpoint for serving: OpenSearch ml-commons artifacts, a
sentence-transformers SparseEncoder directory, or ONNX; every export has a model card (README.md).

    python -m sparse.export CHECKPOINT --to opensearch|sentence-transformers|onnx --output DIR [--register URL]
    python -m sparse.export CHECKPOINT --to opensearch --output DIR --prune_type top_k --prune_ratio 64""",
                  options=ExportArguments)


def _sample(path: str | None, size: int) -> tuple[list[str], str]:
    if not path:
        return SAMPLE_TEXTS, f"{len(SAMPLE_TEXTS)} built-in sentences"
    if not os.path.isfile(path):
        raise UserError(f"--sample_corpus {path}: no such file")
    from sparse.data.beir import iter_corpus_texts  # UTF-8 and JSON errors name the file and line

    texts = []
    for text in iter_corpus_texts(path):
        if len(texts) >= size:
            break
        if text.strip():
            texts.append(text.strip())
    if not texts:
        raise UserError(f"--sample_corpus {path} holds no documents")
    return texts, f"first {len(texts)} documents of {path}"


EXPORT_MARKER = ".sparse-export"  # written into every export folder: only such a folder may be replaced


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def check_output(checkpoint: str | None, output: str, overwrite: bool) -> None:
    """Refuse, before anything is written, an ``output`` that would destroy what the exporter did not
    write: one that is, holds or lies inside the checkpoint, one that is a file, and (with
    ``--overwrite``) a non-empty folder without the exporter's marker."""
    out = _real(output)
    if checkpoint is not None:
        src = _real(checkpoint)
        if _inside(out, src) or _inside(src, out):
            where = ("is the checkpoint" if out == src else "lies inside the checkpoint" if _inside(out, src)
                     else "holds the checkpoint")
            raise UserError(f"--output {output} {where} {checkpoint}: choose a folder outside it "
                            f"(an export never replaces or writes into its source)")
    check_output_dir("--output", output)
    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise UserError(f"--output {output} exists and is not empty; pass --overwrite or choose another folder")
        if not os.path.isfile(os.path.join(out, EXPORT_MARKER)):
            raise UserError(f"--output {output} is not a folder this exporter wrote (no {EXPORT_MARKER} in it): "
                            f"--overwrite only replaces earlier exports; choose another folder")


def _prepare_output(path: str, overwrite: bool) -> None:
    if os.path.isdir(path) and os.listdir(path):
        if not overwrite or not os.path.isfile(os.path.join(path, EXPORT_MARKER)):  # check_output said why
            raise UserError(f"--output {path} exists and is not an earlier export")
        shutil.rmtree(path)
    try:
        os.makedirs(path, exist_ok=True)
        write_text(os.path.join(path, EXPORT_MARKER), "written by python -m sparse.export; --overwrite may "
                                                      "replace this folder\n")
    except OSError as exc:
        raise UserError(f"cannot write --output {path}: {exc.strerror or exc}") from None


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "sparse-model"


def _license_text(checkpoint: str, license_name: str) -> str:
    path = os.path.join(checkpoint, "LICENSE")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    return f"This model is released under the {license_name} licence; see README.md and the base model's licence.\n"


def export(args) -> dict:
    """Write the export ``args.to`` of ``args.checkpoint`` into ``args.output``; return a summary."""
    from sparse.export import card
    from sparse.modeling.encoder import SETTINGS_FILE, SparseEncoder

    if not os.path.isdir(args.checkpoint):
        raise UserError(f"checkpoint directory not found: {args.checkpoint}")
    check_output(args.checkpoint, args.output, args.overwrite)
    if not os.path.isfile(os.path.join(args.checkpoint, SETTINGS_FILE)):
        logging.getLogger(__name__).warning("%s has no %s: exporting with the default settings (inference-free, "
                                            "relu, max pooling)", args.checkpoint, SETTINGS_FILE)
    encoder = SparseEncoder.from_pretrained(args.checkpoint)
    name = _safe_name(args.name or os.path.basename(os.path.abspath(args.checkpoint)))
    results = card.read_results(card.find_results(args.checkpoint, args.results))
    sample = _sample(args.sample_corpus, args.sample_size) if args.to == "opensearch" else None  # read first
    _prepare_output(args.output, args.overwrite)
    try:
        return _write_target(args, encoder, name, results, sample)
    except OSError as exc:  # a full disk, a folder made read-only meanwhile: one line naming the path
        shutil.rmtree(args.output, ignore_errors=True)  # no half export left looking complete
        raise UserError(f"writing the export into {args.output} failed: {exc.strerror or exc}"
                        + (f" ({exc.filename})" if exc.filename else "")) from None
    except BaseException:
        shutil.rmtree(args.output, ignore_errors=True)  # no half export left looking complete
        raise


def _write_target(args, encoder, name: str, results: list[dict], sample=None) -> dict:
    from sparse.export import card

    summary = {"target": args.to, "output": args.output, "name": name}
    if args.to == "opensearch":
        from sparse.export.opensearch_artifacts import write_opensearch

        texts, source = sample or _sample(args.sample_corpus, args.sample_size)
        manifest = write_opensearch(encoder, args.output, name, args.version,
                                    _license_text(args.checkpoint, args.license), texts, source,
                                    url_base=args.url_base, with_onnx=not args.no_onnx,
                                    prune=(args.prune_type, args.prune_ratio))
        files = [m["zip"] for m in manifest["models"].values()] + ["requests/", "quantization.json", "manifest.json"]
        summary["models"] = {role: {"zip": m["zip"], "sha256": m["sha256"]} for role, m in manifest["models"].items()}
    elif args.to == "sentence-transformers":
        from sparse.export.sentence_transformers_dir import load_check, write_sentence_transformers

        layout = write_sentence_transformers(encoder, args.output)
        load_check(args.output)
        files = ["modules.json", "router_config.json", *sorted(set(sum(layout["structure"].values(), [])))]
    else:
        from sparse.export.onnx_dir import write_onnx_dir

        files = write_onnx_dir(encoder, args.output)
    write_text(os.path.join(args.output, "README.md"),
               card.model_card(name, args.checkpoint, encoder, files, args.license, results,
                               card.training_config(args.checkpoint)))
    summary["results_in_card"] = len(results)
    return summary


def run(args: ExportArguments) -> None:
    """Export (and/or register) as ``args`` say, printing each summary as JSON."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.checkpoint is None and not args.register:
        raise UserError("give a checkpoint to export (with --to), or --register URL to register an export")
    if args.register:  # a bad URL, credentials in it or a bad OPENSEARCH_VERIFY_CERTS: before any export
        from sparse.retrieval.opensearch import connection_settings

        connection_settings(args.register, verify_certs=False if args.insecure else None)
    if args.checkpoint is not None:
        if not args.to:
            raise UserError(f"--to is required: one of {', '.join(TARGETS)}")
        check_prune(args.prune_type, args.prune_ratio, names=("--prune_type", "--prune_ratio"))
        if args.prune_type != "none" and args.to != "opensearch":
            raise UserError("--prune_type goes into the OpenSearch ingest pipeline: use it with --to opensearch")
        print(json.dumps(export(args), indent=2))
    if args.register:
        from sparse.export.register import register

        print(json.dumps(register(args.register, args.output, verify_certs=False if args.insecure else None), indent=2))


def main(argv: list[str] | None = None) -> None:
    """``python -m sparse.export``: the one command-line reader, then ``run``."""
    run_command(COMMAND, run, argv)
