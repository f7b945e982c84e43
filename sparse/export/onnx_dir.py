"""``--to onnx``: the document encoder as ONNX with what a runtime needs beside it."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

from sparse.errors import write_text
from sparse.export.opensearch_artifacts import query_idf_table, tokenizer_json
from sparse.export.traced import export_onnx
from sparse.modeling.encoder import IDF_FILE, SETTINGS_FILE, SparseEncoder


def write_onnx_dir(encoder: SparseEncoder, out_dir: str) -> list[str]:
    """``model.onnx`` (inputs ``input_ids``, ``attention_mask``; output ``output``: batch x vocab weights),
    ``tokenizer.json`` (truncating at the model's length), the sparse settings and, for inference-free
    models, ``idf.json`` (the query weights). Returns the file names."""
    export_onnx(encoder, os.path.join(out_dir, "model.onnx"))
    write_text(os.path.join(out_dir, "tokenizer.json"), tokenizer_json(encoder, encoder.settings.max_seq_length))
    write_text(os.path.join(out_dir, SETTINGS_FILE), json.dumps(asdict(encoder.settings), indent=2))
    files = ["model.onnx", "tokenizer.json", SETTINGS_FILE]
    if encoder.settings.inf_free:
        write_text(os.path.join(out_dir, IDF_FILE), json.dumps(query_idf_table(encoder), ensure_ascii=False))
        files.append(IDF_FILE)
    return files
