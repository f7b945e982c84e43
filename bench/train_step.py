"""Optimizer steps/s of the toolkit's training step against a straightforward one, same model, batch and loss.

Straightforward: the full (batch x length x vocab) logits, log(1 + relu) times the mask, max over
the length, special tokens zeroed (``SparseEncoder.forward``), autograd through all of it. Ours:
``SparseTrainingModel`` (vocabulary projection fused with max pooling, exact sparse backward,
``sparse.modeling.maxpool``; on CPUs with native bf16 the forward maxima come from the bf16
screen, and "ours (no screen)" is also run to show the split). All start from the same weights, see the same batches of SciFact
texts and take AdamW steps; the per-step losses must agree to 1e-5 (fp32). Each method runs in
its own child process, so its peak memory (max RSS on CPU, max allocated on CUDA) is its own.

Workloads: ``infonce`` (in-batch negatives, 2 documents per query, FLOPS on documents) and
``kldiv`` (8 documents per query with teacher scores, FLOPS). Models: the offline SPLADE model
(4.4M parameters) and ``--model distilbert`` (a DistilBERT-size masked-LM with random weights).

    python bench/train_step.py --device cpu --steps 6 --batch 16 --length 256
    python bench/train_step.py --device cuda --dtype bf16 --model distilbert --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import build_encoder, run_in_child  # noqa: E402  (bench/common.py)
from sparse.assets import beir_dataset  # noqa: E402
from sparse.data.beir import doc_text  # noqa: E402
from sparse.losses.flops import flops  # noqa: E402
from sparse.losses.ranking import infonce_loss, kldiv_loss, student_scores  # noqa: E402
from sparse.modeling.encoder import SparseEncoder  # noqa: E402

WORKLOADS = {"infonce": 2, "kldiv": 8}  # loss -> documents per query
FLOPS_LAMBDA = 1e-3
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def batches(encoder: SparseEncoder, n_steps: int, batch: int, per_query: int, length: int, device):
    """Fixed batches of SciFact titles (queries) and documents, tokenized once, padded to the longest."""
    with open(beir_dataset("scifact") / "corpus.jsonl", encoding="utf-8") as f:
        docs = [json.loads(line) for line, _ in zip(f, range(n_steps * batch * (per_query + 1)))]
    out, gen = [], torch.Generator().manual_seed(0)
    for s in range(n_steps):
        group = docs[s * batch * (per_query + 1):(s + 1) * batch * (per_query + 1)]
        queries = [d["title"] for d in group[:batch]]
        texts = [doc_text(d) for d in group[batch:]]
        q = encoder.tokenizer(queries, padding=True, truncation=True, max_length=64, return_tensors="pt",
                              return_token_type_ids=False)
        d = encoder.tokenizer(texts, padding=True, truncation=True, max_length=length, return_tensors="pt",
                              return_token_type_ids=False)
        teacher = torch.randn(batch, per_query, generator=gen) * 3
        out.append({k: v.to(device) for k, v in (("q_ids", q["input_ids"]), ("q_mask", q["attention_mask"]),
                                                 ("d_ids", d["input_ids"]), ("d_mask", d["attention_mask"]),
                                                 ("teacher", teacher))})
    return out


def loss_of(loss: str, q_rep, d_rep, teacher, per_query: int):
    if loss == "infonce":
        rank = infonce_loss(q_rep, d_rep, in_batch=True)
    else:
        rank = kldiv_loss(student_scores(q_rep, d_rep, in_batch=False), teacher)
    return rank + FLOPS_LAMBDA * flops(d_rep, per_query)


def run_method(args, method: str, result_queue) -> None:
    """Child process: train ``args.steps`` steps with one method; report time, losses, peak memory."""
    from sparse.training.model import SparseTrainingModel

    torch.set_num_threads(args.threads or torch.get_num_threads())
    device = torch.device(args.device)
    torch.manual_seed(0)
    encoder = build_encoder(args.model, args.length).to(device).train()
    model = SparseTrainingModel(encoder, fused=(method != "straightforward"),
                                screen={"ours": None, "ours (no screen)": False}.get(method))
    per_query = WORKLOADS[args.loss]
    data = batches(encoder, args.steps + 1, args.batch, per_query, args.length, device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-5)
    dtype = DTYPES[args.dtype]
    losses, t0 = [], None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i, b in enumerate(data):
        if i == 1:  # step 0 warms up (allocator, kernels); timing starts after it
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            q_rep, d_rep = model(b["q_ids"], b["q_mask"], b["d_ids"], b["d_mask"])
            loss = loss_of(args.loss, q_rep.float(), d_rep.float(), b["teacher"], per_query)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result_queue.put({"method": method, "seconds": time.perf_counter() - t0, "losses": losses, "peak_mib": peak,
                      "docs_per_step": args.batch * per_query})


def device_screens(args) -> bool:
    """Whether "ours" uses the bf16 screen (fp32 training on a CPU with native bf16)."""
    from sparse.modeling.screen import cpu_has_native_bf16

    return args.device == "cpu" and args.dtype == "fp32" and cpu_has_native_bf16()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    parser.add_argument("--model", choices=("splade", "distilbert"), default="splade")
    parser.add_argument("--loss", choices=tuple(WORKLOADS), default="infonce", help="workload")
    parser.add_argument("--steps", type=int, default=6, help="timed steps (one more warms up)")
    parser.add_argument("--batch", type=int, default=16, help="queries per step")
    parser.add_argument("--length", type=int, default=256, help="document max length")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    print(f"train step: {args.model}, {args.loss} ({WORKLOADS[args.loss]} docs/query), batch {args.batch}, "
          f"length {args.length}, {args.device} {args.dtype}, {args.steps} timed steps, torch {torch.__version__}")
    methods = ["straightforward", "ours"]
    if device_screens(args):
        methods.insert(1, "ours (no screen)")  # the fused path without the CPU bf16 screen, for the split
    rows = [run_in_child(run_method, args, m) for m in methods]
    base, ours = rows[0], rows[-1]
    diff = max(abs(a - b) for a, b in zip(base["losses"], ours["losses"]))
    rel = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(base["losses"], ours["losses"]))
    print(f"{'method':18s} {'steps/s':>8s} {'docs/s':>8s} {'peak MiB':>9s} {'speed-up':>8s}")
    for r in rows:
        rate = args.steps / r["seconds"]
        print(f"{r['method']:18s} {rate:8.3f} {rate * r['docs_per_step']:8.1f} {r['peak_mib']:9.0f} "
              f"{rate / (args.steps / base['seconds']):7.2f}x")
    print(f"max per-step loss difference: {diff:.2e} absolute, {rel:.1e} relative "
          f"(losses {['%.5f' % x for x in ours['losses']]})")


if __name__ == "__main__":
    main()
