"""BEIR evaluation: encode (through ``sparse.corpus``), index, search, metrics (pytrec_eval, BEIR
conventions), sparsity statistics and reports."""
