"""Command-line arguments of ``demo_train_data.py`` and ``data_preparation.py``.

Both scripts read the shared model / data / eval keys of ``sparse.config`` (so the reference's
``--model_name_or_path --inf_free --idf_path --beir_dir --beir_datasets`` keep working, from the
command line or a YAML file) plus the keys of one dataclass below, parsed with the same rules
(``--key value``, ``key=value``, YAML scalars; unknown keys are errors naming the key).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Optional

from sparse.config import ConfigError, ResolvedConfig


@dataclass
class MiningArguments:
    """Keys of ``demo_train_data.py`` (hard-negative mining)."""

    split: str = "train"
    miner: str = "sparse"  # sparse: the given model through an Index; bm25: bm25s
    top_k: int = 50
    negatives_per_query: Optional[int] = None  # None keeps every remaining candidate (reference)
    min_negatives: int = 1  # a query with fewer negatives is dropped (and counted)
    skip_top: int = 0  # remaining candidates skipped from the top (likely false negatives)
    sampling: str = "top"  # top | random (among the candidates left after skip_top)
    seed: int = 42
    output: Optional[str] = None  # default data/<name>_train
    batch_size: int = 32  # encoding batch size
    overwrite: bool = False
    bm25_k1: float = 0.9  # --miner bm25: sparse.retrieval.bm25 settings (Anserini's k1, b)
    bm25_b: float = 0.4
    bm25_stemmer: Optional[str] = "english"  # PyStemmer language; null: no stemming
    bm25_stopwords: Optional[str] = "en"  # bm25s stop word list; null: keep every word


@dataclass
class KDPrepArguments:
    """Keys of ``data_preparation.py`` (KD data with teacher scores)."""

    data_dir: Optional[str] = None  # MS MARCO-format or BEIR-format directory
    split: str = "train"
    top_k: int = 100
    teachers: Optional[list] = None  # ["dense:PATH", "sparse:PATH", "cross:PATH", "seq2seq:PATH"]
    dense_pooling: str = "mean"  # dense teachers: mean (sentence-transformers) or cls
    teacher_max_length: int = 512
    teacher_batch_size: int = 32
    teacher_dtype: Optional[str] = None  # fp16 | bf16 | fp32; default half on GPU, fp32 on CPU
    teacher_trust_remote_code: bool = False  # e.g. Alibaba-NLP/gte-large-en-v1.5
    save_teacher_scores: bool = False  # also store each teacher's normalized scores
    queries_per_part: int = 1000  # unit of work, of torchrun sharding and of resuming
    max_queries: Optional[int] = None  # keep the first N queries (sorted by id), for trials
    num_shards: Optional[int] = None  # arrow shards of the output (default: by size)
    prescored: Optional[str] = None  # join-only mode: {query, docs, scores} id lists + texts
    fix_encoding: bool = True  # repair UTF-8 read as latin-1 ("mojibake") in MS MARCO texts
    seed: int = 42
    output: Optional[str] = None  # default data/<name>_kd
    batch_size: int = 32  # encoding batch size of the retriever
    overwrite: bool = False
    # candidates: the union of these retrievers' top_k per query (sparse/datagen/candidates.py)
    candidates: list = dataclasses.field(default_factory=lambda: ["student"])  # student | bm25 | dense:MODEL
    include_positives: Optional[bool] = None  # add the qrels positives; null: true unless candidates=[student]
    write_posnegs: Optional[str] = None  # also write teacher-filtered posnegs rows to this directory
    negative_margin: float = 0.1  # posnegs: drop candidates scored >= (lowest positive's score - margin)
    min_negatives: int = 1  # posnegs: a query with fewer negatives left is dropped (and counted)
    bm25_k1: float = 0.9  # BM25 candidates and the bm25 teacher (sparse.retrieval.bm25)
    bm25_b: float = 0.4
    bm25_stemmer: Optional[str] = "english"  # PyStemmer language; null: no stemming
    bm25_stopwords: Optional[str] = "en"  # bm25s stop word list; null: keep every word


def _fields(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def parse_script_args(argv, cls):
    """(ResolvedConfig of model/data/eval keys, instance of ``cls``) from ``argv``."""
    from sparse.config import HelpRequested, coerce_all, keys_help, read_values, resolve, wants_help

    sections = ("model", "data", "eval")
    if wants_help(argv):
        raise HelpRequested(keys_help(sections, script_cls=cls))
    values, source, cli_keys = read_values(argv)
    own = _fields(cls)
    mine = coerce_all({k: values.pop(k) for k in list(values) if k in own}, own, source, cli_keys)
    cfg: ResolvedConfig = resolve(values, sections=sections, source=source, extra_known=tuple(own),
                                  cli_keys=cli_keys)
    args = cls(**mine)
    _validate(args)
    return cfg, args


def check_inputs(cfg: ResolvedConfig, args) -> None:
    """The files and models a run reads, checked by the entry points before any work (and any file)."""
    from sparse.corpus import check_input_path, check_model_path

    if getattr(args, "prescored", None):
        return
    if isinstance(args, KDPrepArguments):
        check_teacher_models(args)
    needs_student = args.miner == "sparse" if isinstance(args, MiningArguments) else "student" in args.candidates
    if needs_student:
        check_model_path(cfg.model.model_name_or_path)
    if cfg.model.idf_path:
        check_input_path("idf_path", cfg.model.idf_path)
    data_dir = getattr(args, "data_dir", None)
    if data_dir:
        check_input_path("data_dir", data_dir, kind="directory")
    if not data_dir:
        from sparse.assets import check_beir_names

        check_beir_names([n.strip() for n in str(cfg.data.beir_datasets).split(",") if n.strip()],
                         cfg.data.beir_dir)


def _validate(args) -> None:
    for name in ("top_k", "batch_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(args, name)}")
    if isinstance(args, MiningArguments):
        if args.miner not in ("sparse", "bm25"):
            raise ConfigError(f"miner must be 'sparse' or 'bm25', got {args.miner!r}")
        if args.sampling not in ("top", "random"):
            raise ConfigError(f"sampling must be 'top' or 'random', got {args.sampling!r}")
        if args.skip_top < 0 or args.min_negatives < 0:
            raise ConfigError("skip_top and min_negatives must be >= 0")
        if args.negatives_per_query is not None and args.negatives_per_query < 1:
            raise ConfigError(f"negatives_per_query must be >= 1 or null, got {args.negatives_per_query}")
        if args.skip_top >= args.top_k:
            raise ConfigError(f"skip_top ({args.skip_top}) must be below top_k ({args.top_k})")
    if isinstance(args, KDPrepArguments):
        if args.queries_per_part < 1:
            raise ConfigError("queries_per_part must be >= 1")
        from sparse.teachers.dense import POOLINGS

        if args.dense_pooling not in POOLINGS:
            raise ConfigError(f"dense_pooling must be one of {POOLINGS}, got {args.dense_pooling!r}")
        if args.max_queries is not None and args.max_queries < 1:
            raise ConfigError("max_queries must be >= 1 or null")
        from sparse.datagen.candidates import check_candidate_args

        check_candidate_args(args)
    if hasattr(args, "bm25_k1"):
        bm25_params(args)  # checks k1 and b


def check_teacher_models(args: KDPrepArguments) -> None:
    """Every teacher model is checked at start, not after hours of encoding and retrieval."""
    from sparse.corpus import check_model_path
    from sparse.datagen.kd import parse_teacher_specs

    if args.prescored or not args.teachers:
        return  # join-only mode needs no teacher; run_kd says --teachers is required otherwise
    for kind, model in parse_teacher_specs(args.teachers):
        if model is not None:
            check_model_path(model, key=f"--teachers {kind}:{model}")


def bm25_params(args):
    """The ``BM25Params`` of the ``bm25_*`` keys."""
    from sparse.retrieval.bm25 import BM25Params

    return BM25Params.from_dict({"k1": args.bm25_k1, "b": args.bm25_b, "stemmer": args.bm25_stemmer,
                                 "stopwords": args.bm25_stopwords})

