"""The model card (README.md) of every export: what the model is, how it was trained and evaluated,
how to serve it."""

from __future__ import annotations

import glob
import json
import os
from typing import Optional

import yaml

from sparse.config import flat_view
from sparse.errors import UserError

CITATIONS = """\
```bibtex
@article{geng2024competitive,
  title   = {Towards Competitive Search Relevance For Inference-Free Learned Sparse Retrievers},
  author  = {Geng, Zhichao and Ru, Dongyu and Yang, Yang},
  journal = {arXiv preprint arXiv:2411.04403},
  year    = {2024}
}

@inproceedings{shen2025exploring,
  title     = {Exploring $\\ell_0$ Sparsification for Inference-free Sparse Retrievers},
  author    = {Shen, Xinjie and Geng, Zhichao and Yang, Yang},
  booktitle = {Proceedings of the 48th International ACM SIGIR Conference on Research and Development in Information Retrieval},
  pages     = {2572--2576},
  year      = {2025}
}
```"""


def find_results(checkpoint: str, extra: Optional[list[str]] = None) -> list[str]:
    """Evaluation results files (``results/<dataset>.json``) of a checkpoint.

    Looked for where ``evaluate_beir.py`` writes them: beside the checkpoint's run
    (``<run>/beir_eval*/<checkpoint-N or final>/results``) and under the checkpoint itself; plus the
    files or folders given with ``--results``.
    """
    ckpt = os.path.abspath(checkpoint)
    label = os.path.basename(ckpt) if os.path.basename(ckpt).startswith("checkpoint-") else "final"
    run = os.path.dirname(ckpt) if label != "final" else ckpt
    patterns = [os.path.join(run, "beir_eval*", label, "results", "*.json"),
                os.path.join(ckpt, "beir_eval*", "results", "*.json")]
    found = [p for pat in patterns for p in sorted(glob.glob(pat))]
    for item in extra or []:
        if os.path.isdir(item):
            found += sorted(glob.glob(os.path.join(item, "*.json")))
        elif os.path.isfile(item):
            found.append(item)
        else:
            raise UserError(f"--results {item}: no such file or folder")
    return list(dict.fromkeys(os.path.abspath(p) for p in found))


def read_results(paths: list[str]) -> list[dict]:
    """One row per results file that is a BEIR evaluation (dataset, NDCG@10, FLOPS, lengths)."""
    rows = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as exc:
                raise UserError(f"results file {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or "metrics" not in data:
            continue
        sp = data.get("sparsity", {})
        rows.append({"dataset": data.get("dataset", os.path.basename(path)[:-5]), "split": data.get("split", ""),
                     "ndcg10": data["metrics"].get("NDCG@10"), "flops": sp.get("flops"),
                     "q_length": sp.get("q_length"), "d_length": sp.get("d_length"), "file": path})
    return rows


def training_config(checkpoint: str) -> dict:
    """The resolved training config saved with the run (``train_config.yaml``), if any."""
    for folder in (checkpoint, os.path.dirname(os.path.abspath(checkpoint))):
        path = os.path.join(folder, "train_config.yaml")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return yaml.safe_load(f) or {}
    return {}


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _training_lines(cfg: dict) -> list[str]:
    if not cfg:
        return ["No `train_config.yaml` was found beside the checkpoint: training settings unknown."]
    m = d = flat_view({k: v for k, v in cfg.items() if k != "training"})  # any grouping of the saved keys
    t = cfg.get("training", {})
    keys = [("training data", d.get("train_file") or d.get("train_file_dir")), ("data type", d.get("data_type")),
            ("losses", d.get("loss_types")), ("loss weights", d.get("loss_weights")),
            ("score normalisation", d.get("score_norm")),
            ("FLOPS (documents): lambda, warm-up steps", (d.get("flops_d_lambda"), d.get("flops_d_T"))),
            ("FLOPS (queries): lambda", d.get("flops_q_lambda")), ("activation", m.get("activation_type")),
            ("pruning ratio", m.get("prune_ratio")), ("learnable IDF", m.get("idf_requires_grad")),
            ("learning rate", t.get("learning_rate")), ("max steps", t.get("max_steps")),
            ("batch size per device", t.get("per_device_train_batch_size")), ("seed", t.get("seed"))]
    return [f"- {k}: `{v}`" for k, v in keys if v is not None and v != (None, None)]


def model_card(name: str, checkpoint: str, encoder, formats: list[str], license_name: str,
               results: list[dict], train_cfg: dict) -> str:
    """README.md text for an export of ``checkpoint``."""
    s = encoder.settings
    base = train_cfg.get("model", {}).get("model_name_or_path") or "unknown (no training config beside the checkpoint)"
    mode = "inference-free (queries: tokenizer + IDF lookup, no model run)" if s.inf_free else \
        "siamese (queries go through the same model)"
    lines = [f"---\nlicense: {license_name}\nlibrary_name: sentence-transformers\ntags:\n- sparse-encoder\n"
             f"- opensearch\n- neural-sparse\n---\n",
             f"# {name}", "",
             f"A learned sparse retriever exported from `{os.path.basename(os.path.abspath(checkpoint))}` by "
             f"sparse-retrieval-toolkit. Documents are encoded by a masked-LM into vocabulary-sized sparse "
             f"vectors; the score is a dot product served by an inverted index.", "",
             "## Model", "",
             f"- base model: `{base}`", f"- mode: {mode}",
             f"- document activation: `{s.activation}`" + (" (scored with relu, decoupled)" if s.decouple_activation else ""),
             f"- pooling: `{s.pooling}`; special tokens {'kept' if s.keep_special_tokens else 'zeroed'}",
             f"- pruning: {'w > ' + str(s.prune_ratio) + ' x max weight (baked into the exported encoders)' if s.prune_ratio else 'none'}",
             f"- max length: {s.max_seq_length} tokens (documents), {encoder.query_max_length()} (queries)",
             f"- vocabulary: {encoder.vocab_size} tokens", "",
             "## Training", "", *_training_lines(train_cfg), "",
             "## Evaluation", ""]
    if results:
        lines += ["| dataset | split | NDCG@10 | FLOPS | query length | document length |", "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {r['dataset']} | {r['split']} | {_fmt(r['ndcg10'])} | {_fmt(r['flops'], 3)} | "
                  f"{_fmt(r['q_length'], 1)} | {_fmt(r['d_length'], 1)} |" for r in results]
        lines += ["", "Figures from the checkpoint's `evaluate_beir.py` results files, embedded exact engine."]
    else:
        lines += ["No evaluation results were found for this checkpoint (run `evaluate_beir.py`, or pass "
                  "`--results`)."]
    lines += ["", "## Files", "", *[f"- {f}" for f in formats], "", "## Use in OpenSearch", "",
              "```bash",
              "# register, deploy, create the pipeline and index, ingest and query (credentials from the environment)",
              "OPENSEARCH_USER=... OPENSEARCH_PASSWORD=... python -m sparse.export --register https://host:9200 --output .",
              "```", "",
              "Or send the bodies in `requests/` yourself: `register_*_meta.json` then each 10 MB chunk of the zip "
              "(`manifest.json` lists offsets) to `POST /_plugins/_ml/models/<id>/upload_chunk/<n>`, or "
              "`register_*.json` (by URL) to `POST /_plugins/_ml/models/_register`; then "
              "`POST /_plugins/_ml/models/<id>/_deploy`, `PUT _ingest/pipeline/sparse-encoding-pipeline` with "
              "`ingest_pipeline.json`, `PUT <index>` with `index_rank_features.json`, and search with a "
              "`query_*.json` body. `quantization.json` says how the weights fit the `sparse_vector` byte range.", "",
              "## Use in sentence-transformers", "",
              "```python", "from sentence_transformers import SparseEncoder",
              "model = SparseEncoder(\"path/to/sentence-transformers\")",
              "docs = model.encode_document([\"a document\"])",
              "queries = model.encode_query([\"a query\"])", "scores = model.similarity(queries, docs)", "```", "",
              "## Licence", "", f"{license_name}; see `LICENSE` and the base model's licence.", "",
              "## Citation", "", CITATIONS, ""]
    return "\n".join(lines)
