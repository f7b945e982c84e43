"""Storage precision of weights: what an engine keeps of a float weight, and how many bytes it takes.

``float``       float32 as given (the exact reference).
``opensearch``  Lucene ``rank_features`` (``FeatureField``): the weight is kept as the term frequency
                ``floatToIntBits(w) >>> 15`` and decoded as ``intBitsToFloat(tf << 15)``: sign, 8
                exponent bits and the top 8 mantissa bits, i.e. 9 significant bits. It truncates
                toward zero, so for w > 0

                    fp9(w) = w - (w mod 2^(e-8)),   0 <= (w - fp9(w)) / w < 2^-8   (about 0.4 %)

                where 2^e <= w < 2^(e+1). Query weights are a boost and are not truncated, so a
                cluster scores ``sum_t w_q(t) * fp9(w_d(t))``.
``seismic``     OpenSearch 3.3+ ``sparse_vector`` (SEISMIC) byte quantization: a document weight is
                clipped to [0, c_i] and stored as ``round(w * 255 / c_i)`` (c_i the field's
                ``quantization_ceiling_ingest``), a query weight likewise with c_s
                (``quantization_ceiling_search``), and the integer dot product is rescaled by
                ``c_s * c_i / 255^2``. Kept here as the dequantized values, which gives that score.
``impact``      an impact index (Anserini / pyserini ``-impact``): ``round(w * scale)`` integers on
                both sides; kept as ``round(w * scale) / scale``, so scores are the integer dot
                product divided by ``scale^2`` (same ranking).

A weight that becomes 0 is not stored (an engine keeps no posting for it).
"""

from __future__ import annotations

import math

import numpy as np

PRECISIONS = ("float", "opensearch", "seismic", "impact")
LUCENE_MIN_NORMAL = np.finfo(np.float32).tiny  # Lucene rejects values below Float.MIN_NORMAL
# sparse_vector (SEISMIC) byte quantization defaults of OpenSearch 3.3: weights are clipped to [0, ceiling]
INGEST_CEILING = 3.0
SEARCH_CEILING = 16.0
BYTE_LEVELS = 255
IMPACT_SCALE = 100.0  # Anserini's usual x100 for float weights
TERM_ID_BYTES = 4  # int32: the document id of an inverted list, or the token id of a forward list


def fp9(values) -> np.ndarray:
    """Truncate float32 values to the 9 significant bits Lucene ``FeatureField`` stores."""
    bits = np.array(values, dtype=np.float32).view(np.uint32)  # a copy, any shape (0-d too)
    return ((bits >> np.uint32(15)) << np.uint32(15)).view(np.float32)


def ingest_ceiling(doc_max: float) -> float:
    """The ``quantization_ceiling_ingest`` the export writes: 3 (OpenSearch's default) when every
    document weight fits, else the largest weight rounded up, so no weight is clipped."""
    return INGEST_CEILING if doc_max <= INGEST_CEILING else float(math.ceil(doc_max))


def byte_quantize(values, ceiling: float) -> np.ndarray:
    """SEISMIC's byte quantization, dequantized: ``round(clip(w, 0, c) * 255 / c) * c / 255``."""
    levels = np.rint(np.clip(np.asarray(values, np.float64), 0.0, ceiling) * BYTE_LEVELS / ceiling)
    return (levels * ceiling / BYTE_LEVELS).astype(np.float32)


def impact_quantize(values, scale: float) -> np.ndarray:
    """Integer impacts, dequantized: ``round(w * scale) / scale``."""
    return (np.rint(np.asarray(values, np.float64) * scale) / scale).astype(np.float32)


def store_values(values, precision: str, ingest_ceiling: float = INGEST_CEILING,
                 impact_scale: float = IMPACT_SCALE) -> np.ndarray:
    """Document weights as an engine in ``precision`` mode stores them."""
    if precision == "float":
        return np.asarray(values, dtype=np.float32)
    if precision == "opensearch":
        return fp9(values)
    if precision == "seismic":
        return byte_quantize(values, ingest_ceiling)
    if precision == "impact":
        return impact_quantize(values, impact_scale)
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def query_values(values, precision: str, impact_scale: float = IMPACT_SCALE) -> np.ndarray:
    """Query weights as an engine in ``precision`` mode applies them (only seismic and impact change them)."""
    if precision == "seismic":
        return byte_quantize(values, SEARCH_CEILING)
    if precision == "impact":
        return impact_quantize(values, impact_scale)
    return np.asarray(values, dtype=np.float32)


def value_bytes(precision: str, largest_impact: float = 0.0) -> int:
    """Bytes of one stored weight: float32 4; rank_features 2 (the 16-bit term frequency: 8 exponent and
    8 mantissa bits); a SEISMIC byte 1; an impact the smallest integer width holding the largest one."""
    if precision == "impact":
        return 1 if largest_impact < 2 ** 8 else 2 if largest_impact < 2 ** 16 else 4
    return {"float": 4, "opensearch": 2, "seismic": 1}[precision]
