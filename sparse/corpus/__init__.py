"""What evaluation and data generation share (and training's distributed helpers): encode a whole
corpus once (sharded over ``torchrun`` ranks, cached on disk), the one distributed module, the
device and cache-directory defaults, and the rule for which sparse settings a user gave explicitly.

Sits on ``modeling`` + ``retrieval`` (+ ``data``, ``config``); never imports evaluation, datagen or
training, which all sit above it.
"""

from sparse.corpus.cache import CorpusVectors, corpus_key, encode_corpus, encoder_fingerprint
from sparse.corpus.settings import (check_input_path, check_model_path, corpus_cache_dir, default_cache_dir, explicit_sparse_settings,
                                    load_encoder, sparse_settings)

__all__ = ["CorpusVectors", "check_input_path", "check_model_path", "corpus_key", "encode_corpus", "encoder_fingerprint", "corpus_cache_dir",
           "default_cache_dir", "explicit_sparse_settings", "load_encoder", "sparse_settings"]
