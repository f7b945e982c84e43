"""What the benchmarks share: the models they run, and one method per fresh child process (so its
peak memory and warm-up are its own)."""

from __future__ import annotations

import multiprocessing as mp

import torch

from sparse.assets import idf_file, splade_model
from sparse.modeling.encoder import SparseEncoder, SparseSettings


def build_encoder(model: str, max_length: int, with_idf: bool = False) -> SparseEncoder:
    """The offline SPLADE model (``with_idf``: the MS MARCO IDF), or a DistilBERT-size masked-LM with
    random weights (seeded) over the same BERT vocabulary: speed does not depend on the weights."""
    if model == "splade":
        return SparseEncoder.from_pretrained(str(splade_model()), settings={"max_seq_length": max_length},
                                             idf_path=str(idf_file()) if with_idf else None)
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForMaskedLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(splade_model()))
    mlm = DistilBertForMaskedLM(DistilBertConfig(vocab_size=len(tokenizer)))
    return SparseEncoder(mlm, tokenizer, SparseSettings(max_seq_length=max_length))


def _child(target, args, method: str, queue) -> None:
    try:
        target(args, method, queue)
    except BaseException as exc:  # the parent waits on the queue: always answer it
        queue.put({"error": f"{method}: {type(exc).__name__}: {exc}"})
        raise


def run_in_child(target, args, method: str) -> dict:
    """``target(args, method, queue)`` in a spawned process; the dict it put on the queue."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(target, args, method, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if "error" in result:
        raise SystemExit(f"benchmark failed in the child process: {result['error']}")
    return result
