"""IDF weights for inference-free queries: load, save and compute (the one IDF module).

File format (the OpenSearch models' ``idf.json``): a JSON object ``{token_string: weight}``.
Tokens of the vocabulary missing from the file get 1.0 (as ml-commons does with the same file),
so a model without an IDF file scores queries as a binary bag of tokens.

Computed IDF uses the BM25 formula, the one behind the MS MARCO ``idf.json``:

    idf(t) = ln(1 + (N - df_t + 0.5) / (df_t + 0.5))

with N the number of documents that have at least one non-special token and df_t the number of
documents containing token t (special tokens excluded, no truncation). Tokens never seen keep 1.0
when the vector is built for a model.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Iterable

import torch

from sparse.errors import UserError, read_user_file, write_json


def vocab_of(tokenizer) -> dict[str, int]:
    return tokenizer.get_vocab()


def load_idf_file(path: str) -> dict[str, float]:
    """Read an ``idf.json``: a JSON object mapping token strings to numbers."""
    data = read_user_file(path, json.load, (json.JSONDecodeError, UnicodeDecodeError), "IDF file not found: {path}",
                          "IDF file {path} is not valid JSON: {exc}")
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                             for v in data.values()):
        raise UserError(f"IDF file {path} must be a JSON object mapping tokens to numbers")
    return check_idf_weights({str(k): float(v) for k, v in data.items()}, path)


def check_idf_weights(idf: dict[str, float], source: str) -> dict[str, float]:
    """An IDF that would make every query silently wrong is an error: NaN or infinite weights (they
    go into every score), or no positive weight at all (relu makes every query empty, and every
    metric NaN)."""
    bad = [t for t, w in idf.items() if not math.isfinite(w)]
    if bad:
        sample = ", ".join(f"{t!r}={idf[t]}" for t in bad[:3])
        raise UserError(f"IDF file {source}: {len(bad)} of {len(idf)} weights are NaN or infinite (e.g. {sample}); "
                        f"recompute it (python -m sparse.idf) or re-copy it")
    if idf and max(idf.values()) <= 0:
        raise UserError(f"IDF file {source}: every one of its {len(idf)} weights is <= 0, so every inference-free "
                        f"query would be empty; recompute it (python -m sparse.idf) or re-copy it")
    return idf


def idf_vector(idf: dict[str, float], tokenizer, vocab_size: int, source: str = "idf") -> torch.Tensor:
    """Dense IDF vector over the model's vocabulary; tokens absent from ``idf`` get 1.0.

    Every token of the file must be in the tokenizer's vocabulary: a file made for another
    tokenizer is an error that says how many tokens do not fit.
    """
    vocab = vocab_of(tokenizer)
    out = torch.ones(vocab_size, dtype=torch.float32)
    missing = []
    for token, weight in idf.items():
        tid = vocab.get(token)
        if tid is None or tid >= vocab_size:
            missing.append(token)
            continue
        out[tid] = weight
    if missing:
        sample = ", ".join(repr(t) for t in missing[:5])
        raise UserError(
            f"{len(missing)} of {len(idf)} tokens of {source} are not in the tokenizer's vocabulary "
            f"(e.g. {sample}): this IDF file was made for another tokenizer"
        )
    return out


def idf_to_dict(vector: torch.Tensor, tokenizer) -> dict[str, float]:
    """Inverse of ``idf_vector``: every vocabulary token with its weight (raw, relu at use)."""
    vec = vector.detach().float().cpu().tolist()
    inv = {i: t for t, i in vocab_of(tokenizer).items()}
    return {inv[i]: w for i, w in enumerate(vec) if i in inv}


def write_idf_file(idf: dict[str, float], path: str) -> None:
    """Write ``{token: weight}`` as an ``idf.json`` (UTF-8, tokens unescaped)."""
    write_json(path, idf, indent=None, ensure_ascii=False)


def save_idf(vector: torch.Tensor, tokenizer, path: str) -> None:
    """Write a model's IDF vector as an ``idf.json`` over its tokenizer's vocabulary."""
    write_idf_file(idf_to_dict(vector, tokenizer), path)


def bm25_idf(n_docs: int, df: int) -> float:
    """ln(1 + (N - df + 0.5) / (df + 0.5)), the BM25 IDF."""
    return math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))


def compute_idf(texts: Iterable[str], tokenizer, batch_size: int = 1000, progress: bool = False) -> dict[str, float]:
    """BM25 IDF of every token seen in ``texts`` (special tokens excluded, no truncation)."""
    special = set(tokenizer.all_special_ids)
    df: Counter = Counter()
    n_docs = 0
    batch: list[str] = []
    texts = iter(texts)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="idf: documents", unit="doc")

    def flush():
        nonlocal n_docs
        if not batch:
            return
        enc = tokenizer(batch, add_special_tokens=False, truncation=False)["input_ids"]
        for ids in enc:
            uniq = set(ids) - special
            if uniq:
                n_docs += 1
                df.update(uniq)
        if bar is not None:
            bar.update(len(batch))
        batch.clear()

    try:
        for text in texts:
            batch.append(text)
            if len(batch) >= batch_size:
                flush()
        flush()
    finally:  # an error while reading ends the progress line first, so the message starts a line
        if bar is not None:
            bar.close()
    if n_docs == 0:
        raise UserError("cannot compute IDF: no document has a non-special token")
    inv = tokenizer.convert_ids_to_tokens(sorted(df))
    return {tok: bm25_idf(n_docs, df[tid]) for tok, tid in zip(inv, sorted(df))}
