"""Retrieval engines behind one ``Index`` protocol: embedded exact search and OpenSearch."""

from sparse.retrieval.base import ENGINES, Index, prune_queries, rank_hits
from sparse.retrieval.embedded import EmbeddedIndex, build_index, index_class
from sparse.retrieval.precision import fp9

__all__ = ["ENGINES", "Index", "EmbeddedIndex", "build_index", "index_class", "fp9", "prune_queries", "rank_hits"]
