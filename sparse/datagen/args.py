"""Keys of ``demo_train_data.py`` (``MiningArguments``) and ``data_preparation.py`` (``KDPrepArguments``).

Both scripts read the shared model / data / eval keys of ``sparse.config`` (so
``--model_name_or_path --inf_free --idf_path --beir_dir --beir_datasets`` work from the command line
or a YAML file) plus the keys of one class below, parsed with the same rules (``--key value``,
``key=value``, YAML scalars; unknown keys are errors naming the key). The keys both scripts have
are declared once, in ``DatagenArguments``. Every field is a ``sparse.config.key`` (help text and
allowed values in its metadata); each class checks its values in ``__post_init__``, and this module
imports no pipeline module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence

from sparse.config import Command, ConfigError, ResolvedConfig, key, parse_command

CANDIDATE_KINDS = ("student", "bm25", "dense")


def _at_least(args, low: int, *names: str, null_ok: bool = False) -> None:
    for name in names:
        value = getattr(args, name)
        if not (value is None and null_ok) and value < low:
            raise ConfigError(f"{name} must be >= {low}{' or null' if null_ok else ''}, got {value}")


def _one_of(name: str, value, allowed: Sequence) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {tuple(allowed)}, got {value!r}")


@dataclass
class DatagenArguments:
    """Keys shared by hard-negative mining and KD data preparation."""

    default_top_k: ClassVar[int] = 50
    output_suffix: ClassVar[str] = "data"

    split: str = key("train", "Split whose queries (those with qrels) are processed.")
    top_k: Optional[int] = key(None, "Documents retrieved per query; null: 50 (mining) or 100 (KD data).", low=1)
    min_negatives: int = key(1, "A query with fewer negatives left is dropped (and counted).", low=0)
    seed: int = key(42, "Random seed.")
    output: Optional[str] = key(None, "Output directory; null: data/<dataset>_train (mining) or data/<dataset>_kd.")
    overwrite: bool = key(False, "Rebuild a finished output instead of stopping.")
    bm25_k1: float = key(0.9, "BM25 k1 (Lucene BM25, sparse.retrieval.bm25).", low=0)
    bm25_b: float = key(0.4, "BM25 b.", low=0, high=1)
    bm25_stemmer: Optional[str] = key("english", "PyStemmer language of BM25; null: no stemming.")
    bm25_stopwords: Optional[str] = key("en", "bm25s stop-word list of BM25; null: keep every word.")

    def __post_init__(self):
        if self.top_k is None:
            self.top_k = self.default_top_k
        _at_least(self, 1, "top_k")
        _at_least(self, 0, "min_negatives")
        self.bm25_params()

    def bm25_params(self):
        """The ``BM25Params`` of the ``bm25_*`` keys (checks k1 and b)."""
        from sparse.retrieval.bm25 import BM25Params

        return BM25Params.from_dict({"k1": self.bm25_k1, "b": self.bm25_b, "stemmer": self.bm25_stemmer,
                                     "stopwords": self.bm25_stopwords})

    def output_dir(self, name: str) -> str:
        """``output``, else ``data/<name>_<train|kd>``."""
        return self.output or os.path.join("data", f"{name}_{self.output_suffix}")


@dataclass
class MiningArguments(DatagenArguments):
    """Keys of ``demo_train_data.py`` (hard-negative mining)."""

    output_suffix: ClassVar[str] = "train"

    miner: str = key("sparse", "sparse: the given model through an Index; bm25: BM25 of the corpus.",
                     choices=("sparse", "bm25"))
    negatives_per_query: Optional[int] = key(None, "Negatives kept per query; null: every remaining candidate.",
                                             low=1)
    skip_top: int = key(0, "Remaining candidates skipped from the top (likely unjudged positives).", low=0)
    sampling: str = key("top", "top: the best remaining candidates; random: drawn among them.",
                        choices=("top", "random"))

    def __post_init__(self):
        super().__post_init__()
        _one_of("miner", self.miner, ("sparse", "bm25"))
        _one_of("sampling", self.sampling, ("top", "random"))
        _at_least(self, 0, "skip_top")
        _at_least(self, 1, "negatives_per_query", null_ok=True)
        if self.skip_top >= self.top_k:
            raise ConfigError(f"skip_top ({self.skip_top}) must be below top_k ({self.top_k})")


@dataclass
class KDPrepArguments(DatagenArguments):
    """Keys of ``data_preparation.py`` (KD data with teacher scores)."""

    default_top_k: ClassVar[int] = 100
    output_suffix: ClassVar[str] = "kd"

    data_dir: Optional[str] = key(None, "MS MARCO-format or BEIR-format directory; null: the one dataset of "
                                        "beir_datasets.")
    teachers: Optional[list] = key(None, "Teachers as TYPE:MODEL (dense, sparse, cross, seq2seq; bm25 alone: the "
                                         "collection's statistics).")
    dense_pooling: str = key("mean", "Pooling of dense teachers: mean (sentence-transformers) or cls.",
                             choices="sparse.teachers.dense:POOLINGS")
    teacher_max_length: int = key(512, "Teacher truncation length in tokens.", low=1)
    teacher_batch_size: int = key(32, "Teacher batch size.", low=1)
    teacher_dtype: Optional[str] = key(None, "Teacher dtype: fp16, bf16 or fp32; null: half precision on GPU, fp32 "
                                             "on CPU.")
    teacher_trust_remote_code: bool = key(False, "Let teacher models run their own code (e.g. gte-large-en-v1.5).")
    save_teacher_scores: bool = key(False, "Also store each teacher's normalized scores.")
    queries_per_part: int = key(1000, "Queries per part: the unit of work, of torchrun sharding and of resuming.",
                                low=1)
    max_queries: Optional[int] = key(None, "Keep the first N queries (sorted by id), for trials.", low=1)
    num_shards: Optional[int] = key(None, "Arrow shards of the output; null: by size.")
    prescored: Optional[str] = key(None, "Join-only mode: {query, docs, scores} id lists joined with the texts of "
                                         "data_dir.")
    fix_encoding: bool = key(True, "Repair UTF-8 read as latin-1 (mojibake) in MS MARCO texts.")
    candidates: list = key(help="Retrievers whose top_k per query are unioned: student, bm25, dense:MODEL.",
                           factory=lambda: ["student"])
    include_positives: Optional[bool] = key(None, "Add the judged positives to the candidates; null: true unless "
                                                  "the candidates are [student] alone and no posnegs rows are "
                                                  "written.")
    write_posnegs: Optional[str] = key(None, "Also write teacher-filtered posnegs rows to this directory.")
    negative_margin: float = key(0.1, "posnegs rows: drop candidates scored >= (lowest positive's score - margin).",
                                 low=0)

    def __post_init__(self):
        super().__post_init__()
        _at_least(self, 1, "queries_per_part", "min_negatives")
        _at_least(self, 1, "max_queries", null_ok=True)
        from sparse.teachers.dense import POOLINGS

        _one_of("dense_pooling", self.dense_pooling, POOLINGS)
        parse_candidates(self.candidates)
        if self.write_posnegs:
            if self.include_positives is False:
                raise ConfigError("write_posnegs needs the positives scored by the teachers: include_positives "
                                  "cannot be false")
            if self.output and os.path.normpath(self.write_posnegs) == os.path.normpath(self.output):
                raise ConfigError("write_posnegs must be another directory than output")
        if not self.negative_margin >= 0:
            raise ConfigError(f"negative_margin must be >= 0, got {self.negative_margin}")

    def wants_positives(self) -> bool:
        """``include_positives``; null means true unless the candidates are the student's alone and no
        posnegs rows are written."""
        if self.include_positives is not None:
            return bool(self.include_positives)
        return parse_candidates(self.candidates) != [("student", None)] or bool(self.write_posnegs)

    def ensemble_order(self) -> bool:
        """Whether rows list their documents by ensemble score (else in the single retriever's order)."""
        return len(parse_candidates(self.candidates)) > 1 or self.wants_positives()


def parse_candidates(specs: Sequence[str]) -> list[tuple[str, Optional[str]]]:
    """``["student", "bm25", "dense:MODEL"]`` -> [(kind, model or None)], in the given order."""
    out: list[tuple[str, Optional[str]]] = []
    for spec in specs or []:
        kind, sep, model = str(spec).strip().partition(":")
        if kind in ("student", "bm25") and not sep:
            out.append((kind, None))
        elif kind == "dense" and sep and model:
            out.append((kind, model))
        else:
            raise ConfigError(f"candidates entry {spec!r}: use student, bm25 or dense:MODEL")
    if not out:
        raise ConfigError("candidates needs at least one retriever: student, bm25 or dense:MODEL")
    if len(set(out)) != len(out):
        raise ConfigError(f"candidates names a retriever twice: {specs}")
    return out


def parse_teacher_specs(specs: Sequence[str]) -> list[tuple[str, Optional[str]]]:
    """``["dense:PATH", "cross:ID", "bm25", ...]`` -> [(type, model id)]; types come from the teacher
    registry. A type that needs no model (``bm25``: the collection being processed) may stand alone
    (model id None)."""
    from sparse.teachers import TEACHER_TYPES, teacher_types

    known = teacher_types()
    out = []
    for spec in specs or []:
        kind, sep, model = str(spec).partition(":")
        optional = kind in known and not getattr(TEACHER_TYPES[kind], "needs_model_id", True)
        if kind not in known or (not optional and (not sep or not model)) or (sep and not model):
            raise ConfigError(f"teacher {spec!r} must be TYPE:MODEL with TYPE one of {known} (bm25 alone: "
                              "the statistics of the collection being processed)")
        out.append((kind, model or None))
    if not out:
        raise ConfigError("--teachers is required: e.g. --teachers dense:PATH,sparse:PATH "
                          f"(types {known})")
    return out


def command_of(cls) -> Command:
    """The ``Command`` of the script whose keys ``cls`` holds: its keys plus the configuration groups.
    Data generation truncates corpus documents only, so its ``max_seq_length`` is read as
    ``corpus_max_seq_length`` (with a note)."""
    prog = "demo_train_data.py" if issubclass(cls, MiningArguments) else "data_preparation.py"
    return Command(prog, options=cls, config=True, key_aliases={"max_seq_length": "corpus_max_seq_length"})


def parse_script_args(argv, cls):
    """(ResolvedConfig, instance of ``cls``) from ``argv``, read by the one command-line reader."""
    return parse_command(command_of(cls), argv)


# files every data-generation output folder holds (save_to_disk, stats): only such a folder is replaced
DATA_MARKERS = ("stats.json", "dataset_info.json", "dataset_dict.json", "state.json")


def check_inputs(cfg: ResolvedConfig, args: DatagenArguments) -> None:
    """The files and models a run reads, checked by the entry points before any work (and any file)."""
    from sparse.corpus import check_input_path, check_model_path

    from sparse.errors import check_output_apart, check_output_dir, check_replaceable

    sources = {"data_dir": getattr(args, "data_dir", None), "model": cfg.model.model_name_or_path,
               "idf_path": cfg.model.idf_path}
    if not getattr(args, "data_dir", None) and cfg.data.beir_datasets:
        from sparse.assets import beir_root

        root = beir_root(cfg.data.beir_dir)
        sources.update({f"BEIR dataset {n.strip()}": os.path.join(root, n.strip())
                        for n in str(cfg.data.beir_datasets).split(",") if n.strip()})
        sources["beir_dir"] = str(root)
    for name in ("output", "write_posnegs"):  # a file in the way, a read-only parent: named before any work
        check_output_dir(name, getattr(args, name, None))
        check_output_apart(name, getattr(args, name, None), sources)  # never the input it reads
        check_replaceable(name, getattr(args, name, None), DATA_MARKERS)  # never a folder it did not write
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


def check_teacher_models(args: KDPrepArguments) -> None:
    """Every teacher model is checked at start, not after hours of encoding and retrieval."""
    from sparse.corpus import check_model_path

    if args.prescored or not args.teachers:
        return  # join-only mode needs no teacher; run_kd says --teachers is required otherwise
    for kind, model in parse_teacher_specs(args.teachers):
        if model is not None:
            check_model_path(model, key=f"--teachers {kind}:{model}")
