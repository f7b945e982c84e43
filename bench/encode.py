"""Documents/second of ``SparseEncoder.encode_documents`` against the straightforward computation.

Baseline (always fp32): batches of ``--batch_size`` in corpus order, the full batch x length x
vocab logits, masked max, log(1 + relu), special tokens zeroed. Ours: ``encode_documents`` with
``--dtype`` (fp32 is exact; bf16/fp16 autocast the transformer on CUDA), tokenization included.
Each method runs in its own child process (peak memory is its own: max RSS on CPU, max allocated
on CUDA). Printed per method: seconds, docs/s, speed-up, peak memory, agreement with the fp32
baseline (max |difference|, Jaccard of the non-zero sets) and SciFact NDCG@10 on the documents
encoded (all judged test documents first, so the figure is meaningful on a subset), and the
fraction of the device's peak FLOP/s reached (transformer + vocabulary projection FLOPs counted
per real token).

    python bench/encode.py --device cpu --docs 500
    python bench/encode.py --device cuda --dtype bf16 --docs 0 --batch_size 256   # 0 = whole corpus
    python bench/encode.py --model distilbert --docs 200                          # DistilBERT size, random weights
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import build_encoder, run_in_child  # noqa: E402  (bench/common.py)
from sparse.assets import beir_dataset  # noqa: E402
from sparse.data.beir import doc_text  # noqa: E402
from sparse.modeling.encoder import SparseEncoder  # noqa: E402
from sparse.modeling.vectors import SparseBatch  # noqa: E402

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# dense peak TFLOP/s of known devices (vendor figures, no sparsity): fp32, and bf16/fp16 tensor cores
PEAK_TFLOPS = {"H200": {"fp32": 67.0, "bf16": 989.0, "fp16": 989.0},
               "H100": {"fp32": 67.0, "bf16": 989.0, "fp16": 989.0},
               "A100": {"fp32": 19.5, "bf16": 312.0, "fp16": 312.0}}


def scifact_subset(n_docs: int):
    """Texts and ids: every document judged in the test qrels first, then corpus order up to ``n_docs``
    (0: the whole corpus); the test queries and qrels restricted to them."""
    root = beir_dataset("scifact")
    with open(root / "corpus.jsonl", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    qrels: dict = {}
    for line in (root / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        q, d, g = line.split("\t")
        qrels.setdefault(q, {})[d] = int(g)
    judged = {d for rel in qrels.values() for d in rel}
    ordered = [d for d in docs if d["_id"] in judged] + [d for d in docs if d["_id"] not in judged]
    chosen = ordered[:n_docs] if n_docs else ordered
    with open(root / "queries.jsonl", encoding="utf-8") as f:
        queries = {r["_id"]: r["text"] for r in map(json.loads, f) if r["_id"] in qrels}
    return [doc_text(d) for d in chosen], [d["_id"] for d in chosen], queries, qrels


def straightforward(encoder: SparseEncoder, texts, batch_size: int, max_length: int) -> torch.Tensor:
    out = []
    special = encoder.tokenizer.all_special_ids
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            enc = encoder.tokenizer(texts[s:s + batch_size], padding=True, truncation=True, max_length=max_length,
                                    return_tensors="pt", return_token_type_ids=False).to(encoder.device)
            logits = encoder.mlm(**enc).logits
            masked = logits.masked_fill(enc["attention_mask"][..., None] == 0, float("-inf"))
            w = torch.log1p(torch.relu(masked.amax(dim=1)))
            w[:, special] = 0
            out.append(SparseBatch.from_dense(w))
    return SparseBatch.concat(out)


def model_flops(encoder: SparseEncoder, texts, max_length: int) -> float:
    """FLOPs of the transformer and the vocabulary projection over the real tokens of ``texts``."""
    cfg = encoder.mlm.config
    hidden = encoder.mlm.get_output_embeddings().weight.shape[1]
    lengths = [len(x) for x in encoder.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    body = sum(p.numel() for n, p in encoder.mlm.named_parameters() if "embeddings" not in n and "vocab_projector"
               not in n and "decoder" not in n and "predictions" not in n)
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layers", 0)
    per_token = 2 * body + 2 * hidden * encoder.vocab_size
    attention = sum(4 * n * n * hidden * layers for n in lengths)  # scores and weighted sum
    return per_token * sum(lengths) + attention


def device_peak_tflops(device: torch.device, dtype: str) -> tuple[float, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in PEAK_TFLOPS.items():
            if key in name:
                return peaks[dtype], f"{name}: {peaks[dtype]:g} TFLOP/s {dtype} (vendor figure)"
        return float("nan"), f"{name}: peak unknown"
    # AVX-512: 2 FMA units x 16 fp32 lanes x 2 FLOPs per cycle and core; bf16 dot products double it
    mhz = max(float(line.split(":")[1]) for line in open("/proc/cpuinfo") if line.startswith("cpu MHz"))
    cores = torch.get_num_threads()
    per_cycle = 64 * (2 if dtype == "bf16" else 1)
    peak = cores * mhz * 1e6 * per_cycle / 1e12
    return peak, f"{cores} cores x {mhz:.0f} MHz x {per_cycle} FLOP/cycle = {peak:.2f} TFLOP/s (estimate)"


def run_method(args, method: str, queue) -> None:
    """Child process: encode the documents with one method, report time, vectors, peak memory."""
    device = torch.device(args.device)
    encoder = build_encoder(args.model, args.max_length, with_idf=True).to(device).eval()
    texts, *_ = scifact_subset(args.docs)
    warm = texts[:args.batch_size]  # one batch warms up allocator and kernels, outside the timing
    if method == "straightforward":
        straightforward(encoder, warm, args.batch_size, args.max_length)
    else:
        encoder.encode_documents(warm, batch_size=args.batch_size, dtype=args.dtype)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    if method == "straightforward":
        vecs = straightforward(encoder, texts, args.batch_size, args.max_length)
    else:
        vecs = encoder.encode_documents(texts, batch_size=args.batch_size, dtype=args.dtype)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"method": method, "seconds": seconds, "peak_mib": peak,
               "vectors": (vecs.indptr, vecs.indices, vecs.values, vecs.vocab_size)})


def measure(args, method: str) -> dict:
    result = run_in_child(run_method, args, method)
    result["vectors"] = SparseBatch(*result["vectors"])
    return result


def agreement(got: SparseBatch, want: SparseBatch) -> tuple[float, float]:
    """(max |difference|, mean Jaccard of the per-document non-zero sets)."""
    diff = float(abs(got.to_csr() - want.to_csr()).max()) if got.nnz or want.nnz else 0.0
    jac = []
    for i in range(len(want)):
        a, b = set(got.row(i)[0].tolist()), set(want.row(i)[0].tolist())
        jac.append(len(a & b) / max(1, len(a | b)))
    return diff, float(np.mean(jac))


def ndcg10(vectors: SparseBatch, ids, encoder, queries, qrels) -> float:
    from sparse.evaluation.metrics import evaluate_run
    from sparse.retrieval.embedded import EmbeddedIndex

    qids = sorted(queries)
    index = EmbeddedIndex()
    index.add(ids, vectors)
    top_ids, top_scores = index.search(encoder.encode_queries([queries[q] for q in qids]), 10)
    run = {q: dict(zip(a, map(float, b))) for q, a, b in zip(qids, top_ids, top_scores)}
    return evaluate_run(qrels, run, ["NDCG@10"])["NDCG@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="ours; the baseline is fp32")
    parser.add_argument("--model", choices=("splade", "distilbert"), default="splade")
    parser.add_argument("--docs", type=int, default=500, help="documents (0: all 5183)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_length", type=int, default=512)
    args = parser.parse_args()
    device = torch.device(args.device)
    texts, ids, queries, qrels = scifact_subset(args.docs)
    print(f"{len(texts)} SciFact documents, {args.model}, batch {args.batch_size}, max_length {args.max_length}, "
          f"{args.device} {args.dtype}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    rows = [measure(args, "straightforward"), measure(args, "ours")]
    encoder = build_encoder(args.model, args.max_length, with_idf=True)
    flop = model_flops(encoder, texts, args.max_length)
    peak, peak_text = device_peak_tflops(device, args.dtype)
    base = rows[0]
    print(f"model FLOPs for these documents: {flop / 1e12:.2f} TFLOP; device peak: {peak_text}")
    print(f"{'method':16s} {'seconds':>8s} {'docs/s':>8s} {'speed-up':>8s} {'peak MiB':>9s} {'max|diff|':>9s} "
          f"{'Jaccard':>8s} {'NDCG@10':>8s} {'% peak':>7s}")
    for r in rows:
        diff, jac = agreement(r["vectors"], base["vectors"])
        nd = ndcg10(r["vectors"], ids, encoder, queries, qrels) if args.model == "splade" else float("nan")
        r["ndcg"] = nd
        print(f"{r['method']:16s} {r['seconds']:8.2f} {len(texts) / r['seconds']:8.1f} "
              f"{base['seconds'] / r['seconds']:7.2f}x {r['peak_mib']:9.0f} {diff:9.2e} {jac:8.4f} {nd:8.4f} "
              f"{100 * flop / r['seconds'] / (peak * 1e12):6.1f}%")
    print(f"NDCG@10 difference (ours - fp32 baseline): {rows[1]['ndcg'] - base['ndcg']:+.5f}")


if __name__ == "__main__":
    main()
