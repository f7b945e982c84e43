"""Search throughput of EmbeddedIndex against a scipy brute force, side by side in one run.

    .venv/bin/python bench/search.py [--docs 100000 1000000] [--queries 200] [--k 1000]

Synthetic data shaped like a learned sparse corpus: a 30,522-token vocabulary, token popularity
Zipf-like (s = 1.1), ~100 non-zeros per document with gamma(2, 0.5) weights. Queries are
*inference-free*: ~8 distinct tokens drawn from the same popularity law, each weighted by its
BM25 IDF over this corpus, ln(1 + (N - df + 0.5) / (df + 0.5)), as the MS MARCO idf.json is.

Baseline: scipy brute force, ``(Q @ D.T).toarray()`` per query batch, then argpartition top-k.
EmbeddedIndex: inverted index, only the query tokens' posting lists are touched (exact, same
scores; ties by document id). The bench checks that both return the same top-10.

Printed per corpus size: build time, queries/second, the speed-up, and peak memory (Python-level
peak during the search from tracemalloc, which numpy/scipy allocations report to, and the
process peak RSS).
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sparse.modeling.vectors import SparseBatch  # noqa: E402
from sparse.retrieval import EmbeddedIndex  # noqa: E402

VOCAB = 30522


def popularity(vocab: int, s: float = 1.1, seed: int = 0) -> np.ndarray:
    p = 1.0 / np.arange(1, vocab + 1) ** s
    return np.random.default_rng(seed).permutation(p / p.sum())


def synthetic_docs(n: int, nnz: int, p: np.ndarray, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, n, 100_000):  # bounded memory while generating
        m = min(100_000, n - start)
        cols = rng.choice(len(p), size=(m, int(nnz * 1.65)), p=p)
        rows = np.repeat(np.arange(m), cols.shape[1])
        vals = rng.gamma(2.0, 0.5, size=cols.size).astype(np.float32)
        block = sp.csr_matrix((vals, (rows, cols.ravel())), shape=(m, len(p)))
        block.sum_duplicates()  # repeated draws merge: ~nnz distinct tokens per document
        out.append(block)
    return sp.vstack(out, format="csr").astype(np.float32)


def inference_free_queries(n: int, docs: sp.csr_matrix, p: np.ndarray, seed: int, length: int = 8) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    df = np.bincount(docs.indices, minlength=docs.shape[1])
    idf = np.log1p((docs.shape[0] - df + 0.5) / (df + 0.5)).astype(np.float32)
    rows = []
    for _ in range(n):
        toks = np.unique(rng.choice(len(p), size=length, p=p))
        rows.append(toks)
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = np.concatenate(rows)
    return sp.csr_matrix((idf[indices], indices, indptr), shape=(n, docs.shape[1]))


def brute_force(q: sp.csr_matrix, d: sp.csr_matrix, k: int, batch: int = 32):
    dt = d.T.tocsc()
    out = []
    for s in range(0, q.shape[0], batch):
        scores = (q[s:s + batch] @ dt).toarray()
        kk = min(k, scores.shape[1])
        top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        for r in range(scores.shape[0]):
            order = np.argsort(-scores[r, top[r]], kind="stable")
            out.append(top[r, order])
    return out


def measure(fn):
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, elapsed, peak


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--nnz", type=int, default=100)
    ap.add_argument("--k", type=int, default=1000)
    args = ap.parse_args(argv)
    p = popularity(VOCAB)
    rows = []
    for n in args.docs:
        t = time.perf_counter()
        d = synthetic_docs(n, args.nnz, p, seed=1)
        q = inference_free_queries(args.queries, d, p, seed=2)
        gen_s = time.perf_counter() - t
        ids = [f"doc{i:08d}" for i in range(n)]
        index = EmbeddedIndex()
        t = time.perf_counter()
        index.add(ids, SparseBatch.from_csr(d))
        index.documents()  # build the inverted index now, outside the timed search
        build_s = time.perf_counter() - t
        qb = SparseBatch.from_csr(q)
        (e_ids, _), e_s, e_peak = measure(lambda: index.search(qb, args.k))
        b_top, b_s, b_peak = measure(lambda: brute_force(q, d, args.k))
        agree = np.mean([set(e[:10]) == {ids[j] for j in b[:10]} for e, b in zip(e_ids, b_top)])
        rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        rows.append((n, d.nnz / n, q.nnz / q.shape[0], gen_s, build_s, args.queries / e_s, args.queries / b_s,
                     e_peak / 1e6, b_peak / 1e6, rss_gb, agree))
        print(f"{n:>9,} docs: embedded {args.queries / e_s:8.1f} q/s  scipy brute force {args.queries / b_s:8.1f} q/s"
              f"  ({b_s / e_s:.1f}x)  top-10 agreement {agree:.3f}", flush=True)
        index.close()
        del d, index
        gc.collect()
    print()
    print("| docs | nnz/doc | nnz/query | build s | EmbeddedIndex q/s | scipy brute force q/s | speed-up "
          "| search peak MB (embedded / brute) | process peak RSS GB | top-10 agreement |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, dn, qn, gen_s, build_s, eq, bq, ep, bp, rss, agree in rows:
        print(f"| {n:,} | {dn:.1f} | {qn:.1f} | {build_s:.1f} | {eq:.1f} | {bq:.1f} | {eq / bq:.1f}x "
              f"| {ep:.0f} / {bp:.0f} | {rss:.1f} | {agree:.3f} |")
    print(f"\n{args.queries} queries, top-{args.k}, single process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
