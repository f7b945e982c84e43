"""Join published pre-scored id lists with collection texts.

Input rows ``{query: query id, docs: [doc ids], scores: [floats]}`` (e.g. the Hugging Face set
``opensearch-project/msmarco-hard-negatives``: MS MARCO train queries, top-100 candidates,
cross-encoder scores) come from a ``save_to_disk`` directory, a ``.jsonl``/``.json`` or
``.parquet`` file, or a Hugging Face dataset name. Texts come from an MS MARCO-format
(``collection.tsv``, ``queries.<split>.tsv``) or BEIR-format directory. Output rows are ``kd``
rows ``{query, q_id, docs, d_ids, scores}``; the scores are kept as published.

Only texts that can be mojibake are repaired (``sources.fix_mojibake``). A row whose query or documents are
missing from the texts is not written; the count and examples go to ``stats.json``.
"""

from __future__ import annotations

import logging
import os
import shutil

from sparse.errors import UserError, write_json

logger = logging.getLogger(__name__)


def load_prescored(spec: str, split: str = "train"):
    """The id-list dataset behind ``--prescored``."""
    from datasets import load_dataset, load_from_disk

    if os.path.isdir(spec):
        ds = load_from_disk(spec)
    elif os.path.isfile(spec):
        kind = "parquet" if spec.endswith(".parquet") else "json"
        ds = load_dataset(kind, data_files=spec, split="train")
    else:
        try:
            ds = load_dataset(spec, split=split)
        except Exception as exc:  # noqa: BLE001 - hub, network or format errors alike
            raise UserError(f"cannot load pre-scored id lists {spec!r}: {exc}") from None
    if hasattr(ds, "keys") and not hasattr(ds, "column_names"):
        raise UserError(f"{spec} holds several splits ({list(ds.keys())}); point at one")
    missing = {"query", "docs", "scores"} - set(ds.column_names)
    if missing:
        raise UserError(f"{spec} lacks columns {sorted(missing)} (needs query, docs, scores)")
    return ds


def text_tables(data_dir: str, split: str, fix_encoding: bool = True) -> tuple[dict, dict]:
    """(query id -> text, doc id -> text) of every query of the split and every document."""
    from sparse.datagen.sources import is_msmarco_dir, read_id_text_tsv

    if is_msmarco_dir(data_dir):
        queries_path = os.path.join(data_dir, f"queries.{split}.tsv")
        if not os.path.isfile(queries_path):
            raise UserError(f"{queries_path} not found")
        return (read_id_text_tsv(queries_path, fix_encoding),
                read_id_text_tsv(os.path.join(data_dir, "collection.tsv"), fix_encoding))
    from sparse.data.beir import doc_text

    corpus_path, queries_path = (os.path.join(data_dir, n) for n in ("corpus.jsonl", "queries.jsonl"))
    for path in (corpus_path, queries_path):
        if not os.path.isfile(path):
            raise UserError(f"{path} not found: {data_dir} is neither MS MARCO- nor BEIR-format")
    from sparse.data.beir import read_jsonl  # UTF-8 and JSON errors name the file and line

    queries = {str(r["_id"]): r.get("text") or "" for _, r in read_jsonl(queries_path)}
    docs = {str(r["_id"]): doc_text(r) for _, r in read_jsonl(corpus_path)}
    return queries, docs


def join_prescored(spec: str, data_dir: str, output: str, split: str = "train", fix_encoding: bool = True,
                   num_shards=None, overwrite: bool = False, max_rows=None) -> dict:
    """Write ``kd`` rows joining the id lists of ``spec`` with the texts of ``data_dir``; returns the stats."""
    from datasets import Features, List, Value

    if os.path.isfile(os.path.join(output, "stats.json")) and not overwrite:
        raise UserError(f"{output} already holds finished data; pass --overwrite true to rebuild it")
    ids = load_prescored(spec, split)
    if max_rows:
        ids = ids.select(range(min(int(max_rows), len(ids))))
    queries, docs = text_tables(data_dir, split, fix_encoding)
    missing = {"count": 0, "examples": []}

    def join(batch):
        out = {"query": [], "q_id": [], "docs": [], "d_ids": [], "scores": []}
        for qid, dids, scores in zip(batch["query"], batch["docs"], batch["scores"]):
            qid, dids = str(qid), [str(d) for d in dids]
            absent = ([qid] if qid not in queries else []) + [d for d in dids if d not in docs]
            if absent or len(dids) != len(scores):
                missing["count"] += 1
                if len(missing["examples"]) < 10:
                    missing["examples"].append({"q_id": qid, "absent": absent[:5],
                                                "lengths": [len(dids), len(scores)]})
                continue
            out["query"].append(queries[qid])
            out["q_id"].append(qid)
            out["docs"].append([docs[d] for d in dids])
            out["d_ids"].append(dids)
            out["scores"].append([float(s) for s in scores])
        return out

    features = Features({"query": Value("string"), "q_id": Value("string"), "docs": List(Value("string")),
                         "d_ids": List(Value("string")), "scores": List(Value("float32"))})
    joined = ids.map(join, batched=True, batch_size=1000, remove_columns=ids.column_names, features=features,
                     desc="join texts", load_from_cache_file=False)
    if os.path.isdir(output):
        shutil.rmtree(output)
    shards = max(1, min(int(num_shards), len(joined))) if num_shards else None
    joined.save_to_disk(output, num_shards=shards)
    stats = {"rows_in": len(ids), "rows": len(joined), "rows_dropped_missing_text": missing,
             "source": spec, "data_dir": data_dir}
    write_json(os.path.join(output, "stats.json"), stats)
    if missing["count"]:
        logger.warning("%d rows not written: ids missing from %s (see stats.json)", missing["count"], data_dir)
    print(f"{output}: {len(joined)} kd rows from {len(ids)} pre-scored id lists; "
          f"{missing['count']} dropped (missing texts)")
    return stats
