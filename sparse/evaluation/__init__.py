"""BEIR evaluation: corpus-vector cache, metrics (pytrec_eval, BEIR conventions), sparsity, reports."""
