"""Query-side training with a frozen document encoder: fit the IDF of an inference-free model.

An inference-free query is the IDF of its tokens, so the score of document d for query q is

    s(q, d) = sum_{t in q} relu(idf_t) * w_t(d)

With the document encoder frozen (``freeze_document_encoder: true``), w(d) is fixed: every
training document is encoded once (at ``corpus_max_seq_length``, the length evaluation uses, and
through the corpus-vector cache, so the vectors of an earlier evaluation are reused) and only the
IDF vector is trained, with AdamW at ``idf_lr`` (no weight decay, constant rate after
``warmup_steps``), over each query's *whole* candidate list:

* ``kd`` rows: ``kldiv`` / ``marginmse`` against the row's teacher scores x ``score_scale``, with
  the ``score_norm`` of ``losses.ranking`` (default "std": the student row gets the teacher's
  spread, so the loss cannot be lowered by scaling every IDF up or down);
* ``posnegs`` rows: ``infonce`` of the positive against its negatives.

One pass over every candidate of 809 SciFact queries takes seconds on a CPU, where running the
transformer over the same documents in ``train_ir.py``'s usual loop would take minutes per epoch.
The saved checkpoint has the base model's weights and the fitted ``idf.json``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Optional

import numpy as np
import torch

from sparse.corpus import encode_corpus
from sparse.corpus.settings import corpus_cache_dir
from sparse.data.beir import load_corpus, sorted_corpus
from sparse.data.datasets import check_row_types, load_rows
from sparse.errors import ConfigError, UserError, write_json
from sparse.losses.ranking import kldiv_loss, marginmse_loss, normalize_student

logger = logging.getLogger(__name__)


def _collection(cfg, rows) -> tuple[list[str], list[str], tuple]:
    """Document ids and texts to encode: the configured BEIR corpus when it holds every training
    document (then evaluation's cache entry is the same), else the distinct training documents."""
    d = cfg.data
    name = str(d.beir_datasets or "")
    # sparse.assets.beir_root holds the full rule (training may not import assets); a folder missed
    # here only means the training documents are encoded on their own, with their own cache entry
    root = d.beir_dir or os.environ.get("BEIR_DIR") or "data/beir"
    folder = os.path.join(root, name) if name and "," not in name else None
    if folder and os.path.isdir(folder) and rows and "d_ids" in rows[0]:
        corpus = load_corpus(folder)
        ids, texts = sorted_corpus(corpus)
        known = set(ids)
        if all(i in known for r in rows for i in r["d_ids"]):
            return ids, texts, (name,)
        logger.info("the training documents are not all in %s: encoding them on their own", folder)
    seen: dict[str, str] = {}
    for r in rows:
        docs = r["docs"] if "docs" in r else [r["pos"], *r["negs"]]
        ids = r.get("d_ids") or docs
        for i, t in zip(ids, docs):
            seen.setdefault(str(i), t)
    return list(seen), list(seen.values()), ("training-docs",)


def _row_docs(r) -> tuple[list[str], list[str], Optional[list[float]]]:
    if "docs" in r:
        return [str(i) for i in (r.get("d_ids") or r["docs"])], r["docs"], r.get("scores")
    docs = [r["pos"], *r["negs"]]
    return docs, docs, None


def load_fit_rows(cfg, encoder, paths: list[str]) -> list[dict]:
    """The checks of the query-side fit and its training rows at ``paths`` (types, docs vs scores), all before
    training writes anything (``sparse.training.run.main`` calls this before its first file)."""
    lcfg = cfg.loss
    if not encoder.settings.inf_free:
        raise ConfigError("freeze_document_encoder trains the query IDF of an inference-free model: set inf_free: true")
    if not cfg.idf.idf_requires_grad:
        raise ConfigError("freeze_document_encoder leaves only the IDF to train: set idf_requires_grad: true")
    losses = list(lcfg.loss_types)
    rows = []
    for path in paths:
        ds = load_rows(path)
        check_row_types(ds, "kd" if "docs" in ds.column_names else "posnegs", path)  # types, docs vs scores
        rows.extend(ds)
    if not rows:
        raise UserError("the training data has no rows")
    kd = "docs" in rows[0]
    allowed = ("kldiv", "marginmse") if kd else ("infonce",)
    if any(name not in allowed for name in losses):
        raise ConfigError(f"freeze_document_encoder with {'kd' if kd else 'posnegs'} rows supports loss_types "
                          f"{list(allowed)}, got {losses}")
    if kd and "scores" not in rows[0]:
        raise ConfigError("kd rows need a 'scores' column to fit the IDF")
    return rows


def fit_idf(cfg, encoder, health=None, rows: Optional[list[dict]] = None) -> dict:
    """Train ``encoder.idf`` on the configured data with the document encoder frozen; returns a summary.
    ``rows``: what ``load_fit_rows`` returned (loaded and checked here when not given)."""
    d, lcfg, args = cfg.data, cfg.loss, cfg.training
    if rows is None:
        rows = load_fit_rows(cfg, encoder)
    losses = list(lcfg.loss_types)
    weights = list(lcfg.loss_weights) if lcfg.loss_weights is not None else [1.0] * len(losses)

    ids, texts, key_parts = _collection(cfg, rows)
    # the documents are encoded where training runs (a GPU when there is one) and through the cache
    # evaluation uses, so a model evaluated before its IDF fit is not encoded again; the fit itself is
    # a few thousand small products and stays on the CPU
    encoder.to(args.device)
    encoded = encode_corpus(encoder, ids, texts, corpus_cache_dir(cfg), key_parts=key_parts,
                            batch_size=args.per_device_eval_batch_size, max_length=cfg.eval.corpus_max_seq_length,
                            progress=True)
    encoder.to("cpu")
    vectors = encoded.vectors.to_csr()
    position = {i: n for n, i in enumerate(ids)}
    logger.info("%d documents (%s, cache %s) for %d training rows", len(ids), key_parts[0],
                "hit" if encoded.cache_hit else "miss", len(rows))

    queries = encoder.tokenize([r["query"] for r in rows], max_length=encoder.query_max_length())
    with torch.no_grad():
        presence = encoder.inference_free_dense(queries["input_ids"], queries["attention_mask"]) != 0
    prepared = []
    for n, r in enumerate(rows):
        row_ids, _, scores = _row_docs(r)
        cols = torch.nonzero(presence[n]).squeeze(1)
        block = vectors[[position[i] for i in row_ids]][:, cols.numpy()].toarray()
        teacher = torch.tensor(scores, dtype=torch.float32) * d.score_scale if scores is not None else None
        prepared.append((cols, torch.from_numpy(block).float(), teacher))

    idf = encoder.idf
    idf.requires_grad_(True)
    start_idf = idf.detach().clone()
    trained_tokens = presence.any(dim=0)  # the vocabulary entries training can move
    lr = cfg.idf.idf_lr if cfg.idf.idf_lr is not None else args.learning_rate
    optimizer = torch.optim.AdamW([idf], lr=lr, weight_decay=0.0)
    batch = args.per_device_train_batch_size
    steps_per_epoch = max(1, len(prepared) // batch if args.dataloader_drop_last else -(-len(prepared) // batch))
    total = args.max_steps if args.max_steps and args.max_steps > 0 else int(round(args.num_train_epochs * steps_per_epoch))
    warmup = args.warmup_steps
    rng = np.random.default_rng(args.seed)
    t0, step, order, cursor, logged = time.time(), 0, [], 0, []
    while step < total:
        if cursor + batch > len(order):
            order, cursor = rng.permutation(len(prepared)).tolist(), 0
        picked = order[cursor:cursor + batch]
        cursor += batch
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) if warmup else lr
        loss = idf.new_zeros(())
        for i in picked:
            cols, block, teacher = prepared[i]
            student = (block @ torch.relu(idf[cols])).unsqueeze(0)
            for name, w in zip(losses, weights):
                if name == "infonce":  # the positive is the row's first document
                    value = torch.nn.functional.cross_entropy(student / lcfg.temperature,
                                                              torch.zeros(1, dtype=torch.long))
                else:
                    t = teacher.unsqueeze(0)
                    s = normalize_student(student, t) if lcfg.score_norm == "std" else student
                    value = (kldiv_loss if name == "kldiv" else marginmse_loss)(s, t, lcfg.temperature)
                loss = loss + w * value
        loss = lcfg.ranking_loss_weight * loss / len(picked)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        logged.append(float(loss.detach()))
        if step % max(1, int(args.logging_steps)) == 0 or step == total:
            record = {"loss": float(np.mean(logged)), "lr_idf": optimizer.param_groups[0]["lr"],
                      "epoch": step / steps_per_epoch,
                      "query_nnz": float((presence.float() * (idf.detach() > 0)).sum(1).mean()),
                      "idf_shift": float((idf.detach() - start_idf)[trained_tokens].abs().mean())}
            logger.info("step %d: %s", step, {k: float(f"{v:.4g}") for k, v in record.items()})
            if health is not None:
                health.write(step, record)
            logged = []
    idf.requires_grad_(False)
    wall = time.time() - t0
    summary = {"global_step": step, "wall_time_s": round(wall, 1), "mode": "freeze_document_encoder",
               "rows": len(rows), "documents": len(ids), "doc_cache_hit": encoded.cache_hit,
               "output_dir": args.output_dir}
    if args.process_index == 0:  # every rank fits the same IDF (same data, same seed); one writes it
        encoder.save_pretrained(args.output_dir)
        write_json(os.path.join(args.output_dir, "train_results.json"), summary)
    logger.info("done: %d IDF steps in %.1f s; model saved to %s", step, wall, args.output_dir)
    return summary
