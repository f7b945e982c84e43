"""A directory ``sentence_transformers.SparseEncoder`` (v5 or later) loads, written file by file.

Layout (the v5 module names, which later versions map to their own):

* ``modules.json``: one ``Router`` module;
* ``router_config.json``: route ``document`` = MLMTransformer + SpladePooling (max or sum pooling,
  ``relu`` = log(1 + relu) or ``log1p_relu`` = the l1_relu activation); for inference-free models
  route ``query`` = SparseStaticEmbedding with relu(idf) per token, otherwise queries share the
  document modules;
* one sub-folder per module with its config, weights and tokenizer.

SpladePooling cannot zero special tokens, so the exported MLM's output bias for them is set very
low: their logits stay negative and relu makes them 0, as the toolkit does.
"""

from __future__ import annotations

import copy
import os

import torch

from sparse.errors import UserError, write_json
from sparse.modeling.encoder import SparseEncoder

ST_ACTIVATION = {"relu": "relu", "l1_relu": "log1p_relu"}  # our activation -> SpladePooling's
SPECIAL_BIAS = -1.0e4  # far below any logit, still finite in fp16
_TYPES = {
    "router": "sentence_transformers.models.Router",
    "mlm": "sentence_transformers.sparse_encoder.models.MLMTransformer",
    "pooling": "sentence_transformers.sparse_encoder.models.SpladePooling",
    "static": "sentence_transformers.sparse_encoder.models.SparseStaticEmbedding",
}


def check_supported(encoder: SparseEncoder) -> None:
    """SparseEncoder has no module for the deeper l0 activations or for ratio pruning: say so."""
    s = encoder.settings
    if s.scoring_activation not in ST_ACTIVATION:
        raise UserError(f"sentence-transformers has no {s.scoring_activation} activation (SpladePooling "
                        f"offers relu and log1p_relu = l1_relu); use --to opensearch or onnx")
    if s.prune_ratio:
        raise UserError("sentence-transformers cannot prune by a ratio of the maximum weight "
                        f"(prune_ratio={s.prune_ratio}); use --to opensearch or onnx")


def _mlm_with_silenced_specials(encoder: SparseEncoder):
    """A copy of the MLM whose output bias puts special tokens far below zero."""
    mlm = copy.deepcopy(encoder.mlm).float().cpu()
    if encoder.settings.keep_special_tokens or not len(encoder.special_ids):
        return mlm
    decoder = mlm.get_output_embeddings()
    if decoder.bias is None:
        decoder.bias = torch.nn.Parameter(torch.zeros(decoder.weight.shape[0]))
    with torch.no_grad():
        decoder.bias[encoder.special_ids.cpu()] = SPECIAL_BIAS
    return mlm


def _save_module_config(folder: str, data: dict) -> None:
    write_json(os.path.join(folder, "config.json"), data, indent=4)


def write_sentence_transformers(encoder: SparseEncoder, out_dir: str) -> dict:
    """Write the SparseEncoder directory; return the route layout."""
    check_supported(encoder)
    from safetensors.torch import save_file

    s = encoder.settings
    doc_mlm = "document_0_MLMTransformer"
    doc_pool = "document_1_SpladePooling"
    mlm_dir = os.path.join(out_dir, doc_mlm)
    _mlm_with_silenced_specials(encoder).save_pretrained(mlm_dir)
    encoder.tokenizer.save_pretrained(mlm_dir)
    write_json(os.path.join(mlm_dir, "sentence_bert_config.json"),
               {"max_seq_length": int(s.max_seq_length), "do_lower_case": False}, indent=4)
    os.makedirs(os.path.join(out_dir, doc_pool), exist_ok=True)
    _save_module_config(os.path.join(out_dir, doc_pool), {
        "pooling_strategy": s.pooling, "activation_function": ST_ACTIVATION[s.scoring_activation]})
    types = {doc_mlm: _TYPES["mlm"], doc_pool: _TYPES["pooling"]}
    structure = {"document": [doc_mlm, doc_pool]}
    if s.inf_free:
        query = "query_0_SparseStaticEmbedding"
        qdir = os.path.join(out_dir, query)
        os.makedirs(qdir, exist_ok=True)
        weight = torch.relu(encoder.idf.detach()).float().cpu().clone()
        weight[encoder.special_ids.cpu()] = 0.0  # the toolkit never weights special tokens
        save_file({"weight": weight.contiguous()}, os.path.join(qdir, "model.safetensors"))
        encoder.tokenizer.save_pretrained(qdir)
        _save_module_config(qdir, {"frozen": True})
        types[query] = _TYPES["static"]
        structure["query"] = [query]
    else:
        structure["query"] = [doc_mlm, doc_pool]
    write_json(os.path.join(out_dir, "router_config.json"), {
        "types": types, "structure": structure,
        "parameters": {"default_route": "document", "allow_empty_key": True}}, indent=4)
    write_json(os.path.join(out_dir, "modules.json"),
               [{"idx": 0, "name": "0", "path": "", "type": _TYPES["router"]}], indent=2)
    write_json(os.path.join(out_dir, "config_sentence_transformers.json"), {
        "model_type": "SparseEncoder", "prompts": {"query": "", "document": ""}, "default_prompt_name": None,
        "similarity_fn_name": "dot"}, indent=2)
    return {"structure": structure, "types": types}


def load_check(out_dir: str) -> None:
    """Load the directory with sentence-transformers when it is installed (an early, clear failure)."""
    try:
        from sentence_transformers import SparseEncoder as STSparseEncoder
    except ImportError:
        return
    try:
        STSparseEncoder(out_dir, device="cpu")
    except Exception as exc:  # report what sentence-transformers said, with the directory
        raise UserError(f"sentence-transformers cannot load {out_dir}: {exc}") from None
