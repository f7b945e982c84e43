"""Retrieval engines behind one ``Index`` protocol: embedded exact search and OpenSearch."""

from sparse.retrieval.base import Index, prune_queries, rank_hits
from sparse.retrieval.embedded import EmbeddedIndex, build_index
from sparse.retrieval.precision import fp9

__all__ = ["Index", "EmbeddedIndex", "build_index", "fp9", "prune_queries", "rank_hits"]
