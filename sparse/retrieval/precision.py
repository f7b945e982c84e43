"""Storage precision of document weights.

OpenSearch / Lucene ``rank_features`` (``FeatureField``) keep a weight as the term frequency
``floatToIntBits(w) >>> 15`` and decode it as ``intBitsToFloat(tf << 15)``: the float32 bit
pattern keeps its sign, 8 exponent bits and the top 8 mantissa bits, i.e. 9 significant bits.
It truncates toward zero, so for w > 0

    fp9(w) = w - (w mod 2^(e-8)),   0 <= (w - fp9(w)) / w < 2^-8   (about 0.4 %)

where 2^e <= w < 2^(e+1). Query weights are applied as a boost and are not truncated, so a
cluster scores ``sum_t w_q(t) * fp9(w_d(t))``.
"""

from __future__ import annotations

import numpy as np

PRECISIONS = ("float", "opensearch")
LUCENE_MIN_NORMAL = np.finfo(np.float32).tiny  # Lucene rejects values below Float.MIN_NORMAL


def fp9(values) -> np.ndarray:
    """Truncate float32 values to the 9 significant bits Lucene ``FeatureField`` stores."""
    bits = np.array(values, dtype=np.float32).view(np.uint32)  # a copy, any shape (0-d too)
    return ((bits >> np.uint32(15)) << np.uint32(15)).view(np.float32)


def store_values(values, precision: str) -> np.ndarray:
    """Document weights as an engine in ``precision`` mode stores them."""
    if precision == "float":
        return np.asarray(values, dtype=np.float32)
    if precision == "opensearch":
        return fp9(values)
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
