"""The configuration keys of the toolkit, grouped by the part they configure.

A config is still one flat YAML mapping: every key belongs to exactly one group, so
``flops_d_lambda: 1e-3`` lands in ``cfg.regularizer.flops_d_lambda``. Hugging Face
``TrainingArguments`` keys keep their own names and class (``cfg.training``); ``TRAINING_RANGES``
gives the ranges checked for them. Key names of the reference implementation keep their meaning
(docs/compatibility.md); an older name of a key is declared in its ``aliases``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from sparse.config.keys import key

DEFAULT_BEIR_DATASETS = (
    "trec-covid,nfcorpus,nq,hotpotqa,fiqa,arguana,webis-touche2020,dbpedia-entity,scidocs,"
    "fever,climate-fever,scifact,quora"
)


@dataclass
class ModelArguments:
    """How the sparse encoder is built or loaded."""

    model_name_or_path: Optional[str] = key(None, "Base model or checkpoint: a directory or a hub id.")
    tokenizer_name: Optional[str] = key(None, "Tokenizer directory or hub id; null: the model's own.")
    trust_remote_code: bool = key(False, "Allow model code from the hub (e.g. non-BERT architectures).")
    inf_free: bool = key(True, "Inference-free queries (tokenizer + IDF lookup); false: siamese queries "
                               "through the same model.")
    idf_path: Optional[str] = key(None, "idf.json ({token: weight}) of the query side; null: the checkpoint's "
                                        "own, else all ones.")
    activation_type: str = key("relu", "Document activation over the pooled MLM logits (formulas in "
                                       "sparse/modeling/activations.py).",
                               choices="sparse.modeling.activations:ACTIVATIONS", aliases=("use_l0",),
                               alias_values={"use_l0": {True: "l1_relu", False: None}})
    pooling: str = key("max", "Pooling of the token logits of a document.", choices="sparse.modeling.encoder:POOLINGS")
    prune_ratio: Optional[float] = key(None, "Drop document weights below ratio x the document's largest weight; "
                                             "null: no pruning.", low=0, high=1, high_open=True)
    keep_special_tokens: bool = key(False, "Keep weights of special tokens ([CLS], [SEP], ...) in document vectors.")
    preprocess_func: Optional[str] = key(None, "Text transform before tokenization; null: none.",
                                         choices="sparse.modeling.encoder:PREPROCESS_FUNCS")
    query_max_seq_length: Optional[int] = key(None, "Token limit of every query, inference-free (tokenizer + IDF "
                                                    "lookup) and siamese alike; null: max_seq_length.", low=1)
    split_batch: int = key(1, "Accepted for reference configs; ignored (the encoder projects in token chunks).",
                           low=1)


@dataclass
class DataArguments:
    """Training data: where it is, its format, how rows become training groups."""

    train_file: Optional[str] = key(None, "Training data: a dataset saved with save_to_disk, or a jsonl file.")
    train_file_dir: Optional[Any] = key(None, "A directory of training datasets, or a list of them (mixed by the "
                                              "multi-dataset sampler).")
    dataset_repeats: Optional[dict] = key(None, "Passes over a training dataset per epoch, by its folder or file "
                                                "name under train_file_dir, e.g. {labelled: 4}: its share of the "
                                                "batches grows that many times; others: 1.")
    data_type: str = key("kd", "Row format: kd (query, docs, scores) or posnegs (query, pos, negs).",
                         choices="sparse.data.datasets:DATA_TYPES")
    sample_num_one_query: int = key(2, "Documents per query in a training group (the first is the positive).", low=1)
    max_seq_length: int = key(512, "Token limit of documents in training (and of queries when "
                                   "query_max_seq_length is null).", low=1)
    first_rank_thresh: int = key(10000, "kd data with a first_rank column: keep rows with 0 <= first_rank <= this.",
                                 low=0)
    swap_times: int = key(0, "kd rows: random swaps of the documents' order before grouping (>= half the documents: "
                             "a full shuffle).", low=0)
    score_scale: float = key(1.0, "Multiplies the scores stored in the training data.", low=0, low_open=True)
    beir_dir: Optional[str] = key(None, "Folder of BEIR datasets; null: $BEIR_DIR, ../shared/data/beir, "
                                        "else data/beir.")
    beir_datasets: str = key(DEFAULT_BEIR_DATASETS, "Comma list of BEIR datasets to evaluate on (or to mine).")
    miracl_dir: Optional[str] = key(None, "Accepted for reference configs; ignored (no MIRACL evaluation).")
    miracl_datasets: Optional[str] = key(None, "Accepted for reference configs; ignored (no MIRACL evaluation).")


@dataclass
class LossArguments:
    """Ranking losses over student scores (formulas in sparse/losses/ranking.py)."""

    loss_types: list[str] = key(help="Ranking losses to sum.", factory=lambda: ["kldiv"],
                                choices="sparse.losses.ranking:LOSS_TYPES")
    loss_weights: Optional[list[float]] = key(None, "One weight per entry of loss_types; null: all 1.", low=0)
    ranking_loss_weight: float = key(1.0, "Weight of the summed ranking losses against the regularizers.", low=0)
    use_in_batch_negatives: bool = key(False, "Score every query against every document of the global batch.")
    infonce_exclude_other_positives: bool = key(False, "In-batch infonce: drop the other queries' positives from "
                                                       "the negatives.")
    temperature: float = key(1.0, "Divides student and teacher scores in kldiv and marginmse (infonce does not "
                                  "use it, except in the query-side fit).", low=0, low_open=True)
    score_norm: str = key("std", "Distillation losses: std gives each student score row the teacher row's "
                                 "spread; none: raw scores.", choices="sparse.losses.ranking:SCORE_NORMS")


@dataclass
class RegularizerArguments:
    """Sparsity regularizers: FLOPS, its l0 mask, and the decoupled l0 activation."""

    flops_d_lambda: float = key(1e-3, "Weight of the FLOPS regularizer on document vectors.", low=0)
    flops_d_T: float = key(10000, "Steps over which the document FLOPS weight grows quadratically to "
                                  "flops_d_lambda.", low=0)
    flops_q_lambda: float = key(1e-3, "Weight of the FLOPS regularizer on query vectors (siamese only).", low=0)
    flops_q_T: float = key(10000, "Steps over which the query FLOPS weight grows to flops_q_lambda.", low=0)
    flops_form: str = key("grouped", "grouped: FLOPS per position of the training group; mean: one mean over all "
                                     "rows (SPLADE).", choices="sparse.losses.flops:FLOPS_FORMS")
    flops_threshold: Optional[float] = key(None, "l0 mask: only vectors with more non-zeros than this are "
                                                 "regularized; null: every vector.", low=0)
    decouple_activation: bool = key(False, "Score with plain relu weights; the regularizer sees the l0 "
                                           "activation's weights.")
    lelu_alpha: Optional[float] = key(None, "Not supported (the lelu activation); setting it is an error.")
    lelu_alpha_steps: Optional[int] = key(None, "Accepted for reference configs; ignored (no lelu activation).")


@dataclass
class TeacherArguments:
    """Online teachers scoring the training groups."""

    kd_ensemble_teacher_kwargs: dict = key(help="Teacher ensemble scoring each training group: types, model_ids, "
                                                "score_scale, ... (sparse/teachers/ensemble.py); empty: the "
                                                "data's stored scores.", factory=dict)


@dataclass
class IdfTrainingArguments:
    """Training the query-side IDF."""

    idf_requires_grad: bool = key(False, "Train the IDF vector of inference-free queries with the model.")
    idf_lr: Optional[float] = key(None, "Learning rate of the IDF vector; null: learning_rate.", low=0)
    freeze_document_encoder: bool = key(False, "Train only the query IDF over fixed document vectors (the "
                                               "query-side fit, sparse/training/idf_fit.py).")


@dataclass
class OptimizerArguments:
    """Learning rates of the model's parts beside Hugging Face's learning_rate (which the body keeps)."""

    head_lr: Optional[float] = key(None, "Learning rate of the MLM head (the parameters outside the base model: its "
                                         "transform and the per-term output bias; tied word embeddings stay with "
                                         "the body); null: learning_rate.", low=0, low_open=True)
    untie_output_embeddings: bool = key(False, "Give the MLM's output projection its own copy of the word embeddings "
                                               "(and of its bias) before training, so the terms' output vectors "
                                               "train apart from the input embeddings, at head_lr when set; the "
                                               "saved model is untied (vocabulary x hidden more weights; transformers >= 5 "
                                               "reloads it).")


@dataclass
class HealthArguments:
    """The training-health log (train_log.jsonl) and the collapse watch."""

    health_window: int = key(100, "Steps over which vocabulary activity is counted.", low=1)
    collapse_ratio: float = key(0.5, "Warn when document size falls below this ratio of its start (or of "
                                     "target_doc_nnz); 0: no collapse watch.", low=0)
    target_doc_nnz: Optional[float] = key(None, "Document size the regularizer is meant to reach; the collapse "
                                                "watch compares against it.", low=0, low_open=True)
    stop_on_collapse: bool = key(False, "Save and stop when a collapse is detected.")


@dataclass
class EvalArguments:
    """Encoding a corpus and evaluating retrieval on it."""

    corpus_max_seq_length: int = key(512, "Token limit of documents when a whole corpus is encoded (evaluation, "
                                          "mining, KD candidates, query-side fit); also names the cache entry.",
                                      low=1, aliases=("eval_max_seq_length",))
    encode_batch_size: Optional[int] = key(None, "Documents per batch when encoding a corpus; null: evaluation "
                                                 "takes per_device_eval_batch_size when given, else 64; data "
                                                 "generation 32.", low=1,
                                           aliases=("batch_size",))
    encode_dtype: str = key("fp32", "Corpus encoding dtype: fp32 exact everywhere; bf16/fp16 autocast (faster on "
                                    "GPUs, approximate).", choices="sparse.modeling.encoder:ENCODE_DTYPES")
    cache_dir: Optional[str] = key(None, "Corpus-vector cache; null: $SPARSE_CACHE_DIR, else "
                                         "~/.cache/sparse/corpus_vectors.")
    engine: str = key("embedded", "Search engine: embedded (exact, in-process) or opensearch.",
                      choices="sparse.retrieval.base:ENGINES")
    eval_split: str = key("test", "qrels split evaluated.")
    eval_top_k: int = key(1000, "Documents retrieved per query.", low=1)
    skip_ingest: bool = key(False, "Reuse an existing OpenSearch index instead of ingesting the corpus.")
    write_run_files: bool = key(True, "Write TREC run files of the retrieved documents.")
    explain_top_k: int = key(10, "Top documents per query whose matching tokens (query x document weight) go to "
                                 "runs/<dataset>.explain.jsonl, read by sparse compare; 0: none.", low=0)
    do_search: bool = key(True, "Accepted for reference configs; ignored (evaluation always searches).")


@dataclass
class ServingArguments:
    """How the index is served: document pruning, stored precision, query pruning, two-phase search, and
    the cost figures of every evaluation (docs/evaluation.md#serving-settings). Applied to the cached
    corpus vectors, so they never change a cache entry."""

    doc_prune_type: str = key("none", "Document pruning at ingest, as the sparse_encoding processor's prune_type "
                                      "(formulas in sparse/retrieval/pruning.py).",
                              choices="sparse.retrieval.pruning:PRUNE_TYPES")
    doc_prune_value: Optional[float] = key(None, "The prune_ratio of doc_prune_type: max_ratio and alpha_mass in "
                                                 "[0, 1), top_k an integer >= 1, abs_value >= 0.", low=0)
    index_precision: str = key("float", "Stored weights: float (exact), opensearch (rank_features 9-bit, like a "
                                        "cluster), seismic (sparse_vector byte quantization), impact (integers, "
                                        "round(w x impact_scale)); embedded engine.",
                               choices="sparse.retrieval.precision:PRECISIONS")
    seismic_ceiling_ingest: Optional[float] = key(None, "index_precision seismic: quantization_ceiling_ingest; null: "
                                                        "what the export writes (3, or the largest document weight "
                                                        "rounded up).", low=0, low_open=True)
    impact_scale: float = key(100.0, "index_precision impact: weights become round(w x impact_scale).",
                              low=0, low_open=True)
    query_prune: float = key(0.0, "Drop query tokens with weight <= ratio x the query's largest weight.",
                             low=0, high=1, high_open=True)
    use_two_phase: bool = key(False, "OpenSearch two-phase search pipeline (engine opensearch only).")
    latency_queries: int = key(1000, "Queries timed one at a time for the embedded engine's p50/p99 latency; "
                                     "0: no timing.", low=0)


@dataclass
class WindowArguments:
    """Long documents in evaluation: token windows instead of truncation (docs/evaluation.md)."""

    doc_window_length: Optional[int] = key(None, "Split documents into windows of this many tokens (special tokens "
                                                 "included) instead of truncating them at corpus_max_seq_length; "
                                                 "null: truncate.", low=1)
    doc_window_stride: Optional[int] = key(None, "Tokens from one window's start to the next (below the window's "
                                                 "text tokens: overlap); null: windows touch, no overlap.", low=1)
    doc_window_combine: str = key("max_window", "max_window: each window indexed, a document scores its best "
                                                "window (OpenSearch chunking + nested max); max_pool: one vector, "
                                                "the elementwise max of the windows'.",
                                  choices="sparse.modeling.windows:COMBINE_MODES")


@dataclass
class OpenSearchArguments:
    """The OpenSearch cluster of engine: opensearch (user and password only from the environment)."""

    opensearch_url: Optional[str] = key(None, "Cluster URL, without credentials (OPENSEARCH_USER / "
                                              "OPENSEARCH_PASSWORD).")
    opensearch_query_form: str = key("rank_feature", "Query form: rank_feature, or neural_sparse.",
                                     choices="sparse.retrieval.opensearch:QUERY_FORMS")
    opensearch_index_prefix: str = key("sparse-eval", "Prefix of the index names the evaluation creates.")
    delete_index: bool = key(False, "Delete each index after evaluation.")
    opensearch_verify_certs: Optional[bool] = key(None, "Verify TLS certificates; null: $OPENSEARCH_VERIFY_CERTS, "
                                                        "else true.")
    opensearch_timeout: Optional[float] = key(None, "Client timeout in seconds; null: $OPENSEARCH_TIMEOUT, else 60.",
                                              low=0, low_open=True)
    opensearch_bulk_size: int = key(500, "Documents per _bulk request.", low=1)


# group attribute of ResolvedConfig -> its class, in the order --help and the docs list them
GROUPS = {
    "model": ModelArguments,
    "data": DataArguments,
    "loss": LossArguments,
    "regularizer": RegularizerArguments,
    "teachers": TeacherArguments,
    "idf": IdfTrainingArguments,
    "optimizer": OptimizerArguments,
    "health": HealthArguments,
    "eval": EvalArguments,
    "serving": ServingArguments,
    "windows": WindowArguments,
    "opensearch": OpenSearchArguments,
}

# keys accepted so reference configs run, but without effect here: a warning names each one given
IGNORED_KEYS = {
    "split_batch": "the encoder always projects in token chunks",
    "miracl_dir": "MIRACL evaluation is not supported",
    "miracl_datasets": "MIRACL evaluation is not supported",
    "do_search": "evaluation always searches (use skip_ingest to reuse an index)",
    "lelu_alpha_steps": "the lelu activation is not supported",
}

# Hugging Face TrainingArguments keys: allowed range (low, high, low_open) checked before anything runs
TRAINING_RANGES = {
    "per_device_train_batch_size": (1, None, False),
    "per_device_eval_batch_size": (1, None, False),
    "gradient_accumulation_steps": (1, None, False),
    "learning_rate": (0, None, False),
    "weight_decay": (0, None, False),
    "warmup_steps": (0, None, False),
    "warmup_ratio": (0, 1, False),
    "num_train_epochs": (0, None, True),
    "logging_steps": (0, None, True),
    "save_steps": (0, None, True),
    "save_total_limit": (1, None, False),
    "max_grad_norm": (0, None, False),
    "adam_epsilon": (0, None, True),
    "adam_beta1": (0, 1, False),
    "adam_beta2": (0, 1, False),
    "dataloader_num_workers": (0, None, False),
    "seed": (0, None, False),
}
# HF keys the reference sets to null, and the HF value that means the same
TRAINING_NULL_AS = {"max_grad_norm": 0.0}
# HF keys whose default differs here (training reports nowhere unless asked; tensorboard when installed)
TRAINING_DEFAULTS = {"output_dir": "output/run", "report_to": "none"}
# help of HF keys whose meaning here is narrower than the transformers text
TRAINING_HELP = {"max_steps": "Optimizer steps to train; -1: num_train_epochs decides. Allowed: -1 or >= 1.",
                 "report_to": "Integrations to report to (tensorboard, wandb, ...); none: no reporting."}
