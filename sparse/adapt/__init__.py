"""Adapt a sparse encoder to a corpus: pseudo-queries, ensemble pseudo-labels, two-stage training, evaluation."""
