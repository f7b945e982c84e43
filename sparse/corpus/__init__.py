"""What evaluation and data generation share (and training's distributed helpers): encode a whole
corpus once (sharded over ``torchrun`` ranks, cached on disk), the one distributed module, the
device and cache-directory defaults, and the rule for which sparse settings a user gave explicitly.

Sits on ``modeling`` + ``retrieval`` (+ ``data``, ``config``); never imports evaluation, datagen or
training, which all sit above it.
"""

from sparse.corpus.cache import (CorpusVectors, cached_embeddings, corpus_key, embed_corpus, encode_corpus,
                                 encoder_fingerprint)
from sparse.corpus.settings import (corpus_cache_dir, default_cache_dir, engine_options, explicit_sparse_settings,
                                    load_encoder, sparse_settings, training_sparse_settings)
from sparse.errors import check_input_path, check_model_path

__all__ = ["CorpusVectors", "cached_embeddings", "check_input_path", "check_model_path", "corpus_cache_dir",
           "corpus_key", "default_cache_dir", "embed_corpus", "encode_corpus", "encoder_fingerprint", "engine_options",
           "explicit_sparse_settings", "load_encoder", "sparse_settings",
           "training_sparse_settings"]
