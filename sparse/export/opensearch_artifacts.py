"""Everything OpenSearch needs to serve a checkpoint as local ml-commons models.

Written under ``DIR``:

* ``<name>-sparse-encoding-torch_script.zip``: function ``SPARSE_ENCODING``, format ``TORCH_SCRIPT``:
  ``<name>.pt`` (see ``traced``), ``tokenizer.json`` (truncation at the model's max length) and
  ``LICENSE``, all at the root;
* ``<name>-sparse-encoding-onnx.zip``: the same model as ONNX (when the onnx package is installed);
* ``<name>-sparse-tokenize.zip`` (inference-free models): function ``SPARSE_TOKENIZE``,
  ``tokenizer.json`` and ``idf.json``. ml-commons weights a query token by ``idf.json`` and gives
  tokens missing from it 1.0, so the file lists every non-special token with relu(idf), the
  checkpoint's own (learned) IDF: query and document sides come from one checkpoint. Zero
  weights become 1e-6 and weights above 64 become 64, the range Lucene accepts for a query token;
* ``requests/``: request bodies (register by URL, register by chunks, deploy-time cluster
  settings, ingest pipeline, index mappings, ``neural_sparse`` queries), ``<..._MODEL_ID>``
  placeholders where the cluster assigns ids;
* ``quantization.json``: where the model's weights sit against the ``sparse_vector`` byte
  quantization range; ``manifest.json``: files, hashes, chunks, request list.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from sparse.errors import UserError, file_sha256, write_json
from sparse.export import packaging
from sparse.export.traced import export_onnx, onnx_available, trace_document_encoder
from sparse.modeling.encoder import SparseEncoder
from sparse.retrieval.opensearch import NEURAL_SPARSE_MAX_WEIGHT, feature_name
from sparse.retrieval.precision import INGEST_CEILING, SEARCH_CEILING, ingest_ceiling

logger = logging.getLogger(__name__)

TARGET_VERSIONS = "OpenSearch 2.11+ (rank_features, SPARSE_ENCODING/SPARSE_TOKENIZE); 2.14+ for query_tokens; " \
                  "3.3+ for sparse_vector"
FIELD = "sparse_embedding"
TEXT_FIELD = "text"
PIPELINE = "sparse-encoding-pipeline"
EXAMPLE_QUERY = "what is the effect of vitamin d on bone density"
MIN_QUERY_WEIGHT = 1e-6  # what a zero IDF becomes in the tokenizer zip (Lucene needs weights > 0)
DOC_MODEL_ID = "<DOCUMENT_MODEL_ID>"
QUERY_MODEL_ID = "<QUERY_MODEL_ID>"


def tokenizer_json(encoder: SparseEncoder, max_length: int) -> str:
    """The fast tokenizer's ``tokenizer.json`` with truncation at ``max_length`` and no padding.

    ml-commons tokenizes with this file alone, so a document longer than the model's positions
    must be cut here, as the toolkit cuts it.
    """
    if not getattr(encoder.tokenizer, "is_fast", False):
        raise UserError("OpenSearch needs a tokenizer.json: the checkpoint's tokenizer has no fast "
                        "(tokenizers-library) version")
    data = json.loads(encoder.tokenizer.backend_tokenizer.to_str())
    data["truncation"] = {"direction": "Right", "max_length": int(max_length), "strategy": "LongestFirst",
                          "stride": 0}
    data["padding"] = None
    return json.dumps(data, ensure_ascii=False)


def query_idf_table(encoder: SparseEncoder, floor: float = 0.0) -> dict[str, float]:
    """``{token: relu(idf)}`` for every non-special token: the query weights the checkpoint uses.

    ``floor`` > 0 lifts zero weights to it and caps weights at the ``query_tokens`` limit: Lucene's
    linear feature query (what ``neural_sparse`` builds per query token) rejects a weight outside
    (0, 64], and ml-commons passes every token of the query on, whatever its weight.
    """
    weights = torch.relu(encoder.idf.detach()).float().cpu().numpy()
    if floor > 0:
        weights = np.clip(weights, floor, NEURAL_SPARSE_MAX_WEIGHT)
    special = set(encoder.special_ids.tolist())
    return {tok: float(weights[i]) for i, tok in enumerate(encoder.id_to_token) if i not in special}


def _register_body(name: str, version: str, function_name: str, model_format: str, zip_path: str,
                   description: str) -> dict:
    return {"name": name, "version": version, "description": description, "function_name": function_name,
            "model_format": model_format, "model_content_hash_value": file_sha256(zip_path),
            "model_content_size_in_bytes": os.path.getsize(zip_path)}


def quantization_report(encoder: SparseEncoder, sample_texts: list[str], sample_source: str) -> dict:
    """Where document and query weights sit against the ``sparse_vector`` quantization range."""
    docs = encoder.encode_documents(sample_texts, batch_size=16)
    values = docs.values.astype(np.float64)
    doc_max = float(values.max()) if len(values) else 0.0
    outside = int((values > INGEST_CEILING).sum())
    if encoder.settings.inf_free:
        qvals = np.array(list(query_idf_table(encoder).values()))
        query_source = "every vocabulary token's relu(idf)"
    else:
        qvals = encoder.encode_queries(sample_texts, batch_size=16).values.astype(np.float64)
        query_source = f"{len(sample_texts)} sample texts encoded as queries"
    ceiling = ingest_ceiling(doc_max)
    return {
        "sample": {"source": sample_source, "documents": len(sample_texts)},
        "document_weights": {
            "count": int(len(values)), "max": doc_max,
            "mean": float(values.mean()) if len(values) else 0.0,
            "default_ingest_range": [0.0, INGEST_CEILING],
            "outside_default_range": outside,
            "outside_fraction": outside / max(1, len(values)),
            "fits_default_range": outside == 0,
            "quantization_ceiling_ingest_written": ceiling,
        },
        "query_weights": {
            "source": query_source, "count": int(len(qvals)),
            "max": float(qvals.max()) if len(qvals) else 0.0,
            "default_search_range": [0.0, SEARCH_CEILING],
            "outside_default_range": int((qvals > SEARCH_CEILING).sum()),
            "query_tokens_cap": NEURAL_SPARSE_MAX_WEIGHT,
            "above_query_tokens_cap": int((qvals > NEURAL_SPARSE_MAX_WEIGHT).sum()),
        },
        "rank_features_precision": "9 significant bits (relative error below 2^-8), no clipping",
    }


def _queries(encoder: SparseEncoder) -> dict[str, dict]:
    """One ``neural_sparse`` query body per query mode that fits the model."""
    query = encoder.encode_queries([EXAMPLE_QUERY])
    tokens = {feature_name(t): w for t, w in sorted(query.to_token_dicts(encoder.id_to_token)[0].items()) if w > 0}
    id_tokens = {str(int(i)): float(w) for i, w in zip(*query.row(0)) if w > 0}
    out = {"raw_vector": {"size": 10, "query": {"neural_sparse": {FIELD: {"query_tokens": tokens}}}},
           "raw_vector_sparse_vector": {"size": 10, "query": {"neural_sparse": {FIELD: {
               "query_tokens": id_tokens, "method_parameters": {"k": 10, "top_n": 10, "heap_factor": 1.0}}}}}}
    model_id = QUERY_MODEL_ID if encoder.settings.inf_free else DOC_MODEL_ID
    mode = "doc_only_tokenizer" if encoder.settings.inf_free else "bi_encoder"
    out[mode] = {"size": 10, "query": {"neural_sparse": {FIELD: {"query_text": EXAMPLE_QUERY,
                                                                  "model_id": model_id}}}}
    if encoder.settings.inf_free:
        # the cluster's built-in analyzer has its own (MS MARCO) IDF: it agrees with this model only
        # if the model kept that IDF and the bert-base-uncased vocabulary
        out["doc_only_analyzer"] = {"size": 10, "query": {"neural_sparse": {FIELD: {
            "query_text": EXAMPLE_QUERY, "analyzer": "bert-uncased"}}}}
    return out


def _index_bodies(ceiling: float) -> dict[str, dict]:
    rank_features = {"settings": {"index": {"default_pipeline": PIPELINE}},
                     "mappings": {"properties": {TEXT_FIELD: {"type": "text"}, FIELD: {"type": "rank_features"}}}}
    sparse_vector = {"settings": {"index": {"sparse": True}},
                     "mappings": {"properties": {TEXT_FIELD: {"type": "text"}, FIELD: {
                         "type": "sparse_vector", "method": {"name": "seismic", "parameters": {
                             "quantization_ceiling_ingest": ceiling,
                             "quantization_ceiling_search": SEARCH_CEILING}}}}}}
    return {"index_rank_features": rank_features, "index_sparse_vector": sparse_vector}


def _pipeline(encoder: SparseEncoder, prune_type: str = "none", prune_ratio: float | None = None) -> dict:
    """The ingest pipeline: the sparse_encoding processor, with ``prune_type`` / ``prune_ratio`` when given
    (sparse.retrieval.pruning), else the model's own max_ratio pruning."""
    proc = {"model_id": DOC_MODEL_ID, "field_map": {TEXT_FIELD: FIELD}}
    if prune_type != "none":
        proc.update(prune_type=prune_type, prune_ratio=float(prune_ratio))
    elif encoder.settings.prune_ratio:
        # baked into the model already; the processor's max_ratio (>=) keeps what the model kept (>)
        proc.update(prune_type="max_ratio", prune_ratio=float(encoder.settings.prune_ratio))
    return {"description": "sparse document vectors from the exported encoder", "processors": [{"sparse_encoding": proc}]}


def write_opensearch(encoder: SparseEncoder, out_dir: str, name: str, version: str, license_text: str,
                     sample_texts: list[str], sample_source: str, url_base: str | None = None,
                     with_onnx: bool = True, prune: tuple = ("none", None)) -> dict:
    """Write the zips, request bodies and reports; return the manifest (also written as JSON)."""
    os.makedirs(os.path.join(out_dir, "requests"), exist_ok=True)
    description = f"{name}: inference-free learned sparse model exported by sparse-retrieval-toolkit"
    artifacts = []
    doc_tok = tokenizer_json(encoder, encoder.settings.max_seq_length)
    with tempfile.TemporaryDirectory() as tmp:
        pt = trace_document_encoder(encoder, os.path.join(tmp, f"{name}.pt"))
        zip_path = os.path.join(out_dir, f"{name}-sparse-encoding-torch_script.zip")
        packaging.write_zip(zip_path, {f"{name}.pt": Path(pt), "tokenizer.json": doc_tok, "LICENSE": license_text})
        artifacts.append(("document_encoder", "SPARSE_ENCODING", "TORCH_SCRIPT", zip_path))
        if with_onnx and onnx_available():
            onnx_file = export_onnx(encoder, os.path.join(tmp, f"{name}.onnx"))
            zip_path = os.path.join(out_dir, f"{name}-sparse-encoding-onnx.zip")
            packaging.write_zip(zip_path, {f"{name}.onnx": Path(onnx_file), "tokenizer.json": doc_tok,
                                           "LICENSE": license_text})
            artifacts.append(("document_encoder_onnx", "SPARSE_ENCODING", "ONNX", zip_path))
        elif with_onnx:
            logger.warning("onnx is not installed: no ONNX variant written (pip install onnx)")
    if encoder.settings.inf_free:
        zip_path = os.path.join(out_dir, f"{name}-sparse-tokenize.zip")
        packaging.write_zip(zip_path, {
            "tokenizer.json": tokenizer_json(encoder, encoder.query_max_length()),
            "idf.json": json.dumps(query_idf_table(encoder, floor=MIN_QUERY_WEIGHT), ensure_ascii=False),
            "LICENSE": license_text})
        artifacts.append(("query_tokenizer", "SPARSE_TOKENIZE", "TORCH_SCRIPT", zip_path))

    models = {}
    for role, function_name, model_format, zip_path in artifacts:
        packaging.check_model_zip(zip_path, function_name, model_format)
        body = _register_body(f"{name}-{role.replace('_', '-')}", version, function_name, model_format,
                              zip_path, description)
        chunks = packaging.chunk_ranges(body["model_content_size_in_bytes"])
        by_url = dict(body, url=_url(url_base, zip_path))
        meta = dict(body, total_chunks=len(chunks))
        write_json(os.path.join(out_dir, "requests", f"register_{role}.json"), by_url)
        write_json(os.path.join(out_dir, "requests", f"register_{role}_meta.json"), meta)
        models[role] = {"zip": os.path.basename(zip_path), "function_name": function_name,
                        "model_format": model_format, "sha256": body["model_content_hash_value"],
                        "size_bytes": body["model_content_size_in_bytes"],
                        "chunks": [{"number": i, "offset": o, "length": n} for i, (o, n) in enumerate(chunks)]}

    report = quantization_report(encoder, sample_texts, sample_source)
    write_json(os.path.join(out_dir, "quantization.json"), report)
    requests = {
        "cluster_settings": {"persistent": {"plugins.ml_commons.only_run_on_ml_node": "false",
                                            "plugins.ml_commons.allow_registering_model_via_url": "true",
                                            "plugins.ml_commons.native_memory_threshold": "99"}},
        "ingest_pipeline": _pipeline(encoder, *prune),
        **_index_bodies(report["document_weights"]["quantization_ceiling_ingest_written"]),
        **{f"query_{k}": v for k, v in _queries(encoder).items()},
        "predict_document_encoder": {"text_docs": [EXAMPLE_QUERY]},
        "predict_document_encoder_token_ids": {"text_docs": [EXAMPLE_QUERY],
                                               "parameters": {"sparse_embedding_format": "TOKEN_ID"}},
    }
    for key, body in requests.items():
        write_json(os.path.join(out_dir, "requests", f"{key}.json"), body)
    manifest = {"name": name, "version": version, "targets": TARGET_VERSIONS, "inf_free": encoder.settings.inf_free,
                "settings": {k: v for k, v in vars(encoder.settings).items()}, "models": models,
                "chunk_bytes": packaging.CHUNK_BYTES, "field": FIELD, "text_field": TEXT_FIELD, "pipeline": PIPELINE,
                "requests": sorted(f"requests/{k}.json" for k in requests)
                + sorted(f"requests/register_{r}{s}.json" for r in models for s in ("", "_meta")),
                "example_query": EXAMPLE_QUERY, "torch_version": torch.__version__}
    write_json(os.path.join(out_dir, "manifest.json"), manifest)
    return manifest


def _url(url_base: str | None, zip_path: str) -> str:
    """Where the cluster downloads a zip from: ``url_base``/<zip> or, by default, this file's file:// URL."""
    if url_base:
        return url_base.rstrip("/") + "/" + os.path.basename(zip_path)
    return "file://" + os.path.abspath(zip_path)
