"""The ``train_ir.py`` arguments of the adaptation's two training stages, shared by ``sparse.adapt``
and the benchmarks that search its recipe (``bench/adapt_cv.py``)."""

from __future__ import annotations

from typing import Optional

ENCODER_CONFIG = "config/adapt.yaml"
QUERY_SIDE_CONFIG = "config/adapt_idf.yaml"


def encoder_args(model: str, idf: str, rows_dir: str, steps: Optional[int] = None) -> list[str]:
    """Stage 1, the document side: the whole encoder of ``model`` distilled over every row set under
    ``rows_dir``, its query IDF starting at ``idf``; ``steps`` None keeps the recipe's."""
    return [ENCODER_CONFIG, f"model_name_or_path={model}", f"tokenizer_name={model}", f"idf_path={idf}",
            *([f"max_steps={steps}"] if steps is not None else []), f"train_file_dir={rows_dir}"]


def query_side_args(model: str, idf: Optional[str], rows: str) -> list[str]:
    """Stage 2, the query side: an IDF fitted on ``rows`` over the frozen document vectors of ``model``,
    starting at ``idf`` (None: the IDF saved with ``model``)."""
    return [QUERY_SIDE_CONFIG, f"model_name_or_path={model}", f"tokenizer_name={model}",
            f"idf_path={idf if idf else 'null'}", f"train_file={rows}"]
