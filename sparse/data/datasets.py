"""Training datasets: ``posnegs`` and ``kd`` rows, read lazily from Arrow (the reference's item construction).

Sources: a ``datasets`` ``save_to_disk`` directory or a JSONL file (converted to a memory-mapped
Arrow cache by ``datasets``). Only a small integer index lives in Python; rows are read from
Arrow when an item is requested, so MS MARCO-scale data does not sit in Python lists.

``posnegs`` rows ``{query, pos, negs}``; n = ``sample_num_one_query`` negatives per item. A row
with m negatives gives floor(m / n) items ``(query, [pos] + negs[c*n:(c+1)*n])`` (the incomplete
tail is dropped, as in the reference), so k = 1 + n documents per query.

``kd`` rows ``{query, docs, scores?, first_rank?}``; s = ``sample_num_one_query`` (>= 2) docs per
item. With n = len(docs) and ``step = floor(n / s)``, item i of a row (i = 0..step-1) takes the
docs ``idx[i], idx[i + step], ..., idx[i + (s-1)*step]``: the reference's strided grouping, which
pairs a high-ranked doc with lower-ranked ones. ``idx`` is the identity, or after
``swap_times`` random swaps (i, j uniform in [0, n)) of a partial shuffle; ``swap_times >= n // 2``
means a full shuffle. The permutation is drawn from (seed, row), so it is reproducible and needs
no storage. If the data has a ``first_rank`` column, only rows with
0 <= first_rank <= ``first_rank_thresh`` are kept; the dropped count is logged.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import numpy as np
import pyarrow.compute as pc

from sparse.errors import UserError

logger = logging.getLogger(__name__)

REQUIRED = {"posnegs": ("query", "pos", "negs"), "kd": ("query", "docs")}


def load_rows(path: str):
    """A ``datasets.Dataset`` from a ``save_to_disk`` directory or a JSONL file."""
    import datasets

    if os.path.isdir(path):
        try:
            ds = datasets.load_from_disk(path)
        except (FileNotFoundError, ValueError) as exc:
            raise UserError(f"{path} is not a dataset saved with save_to_disk: {exc}") from None
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise UserError(f"{path} holds splits {list(ds)}, none named 'train'")
            ds = ds["train"]
        return ds
    if os.path.isfile(path):
        if not path.endswith((".jsonl", ".json")):
            raise UserError(f"training file {path} must be a save_to_disk directory or a .jsonl file")
        from sparse.data.beir import check_utf8

        check_utf8(path)  # Arrow's JSON reader takes bytes that are not UTF-8 without a word
        try:
            return datasets.Dataset.from_json(path)
        except Exception as exc:  # noqa: BLE001 - malformed JSON lines: say which file
            raise UserError(f"cannot read {path} as JSON lines: {exc}") from None
    raise UserError(f"training data not found: {path}")


def _list_lengths(ds, column: str, source: str) -> np.ndarray:
    col = ds.data.column(column)
    if col.null_count:
        bad = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise UserError(f"{source}: row {bad} has no '{column}' (null)")
    try:
        return pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
    except Exception:  # noqa: BLE001 - not a list column
        raise UserError(f"{source}: column '{column}' must hold lists, it holds {col.type}") from None


def _check_columns(ds, data_type: str, source: str) -> None:
    missing = [c for c in REQUIRED[data_type] if c not in ds.column_names]
    if missing:
        raise UserError(f"{source}: {data_type} data needs column(s) {missing}; it has {ds.column_names}")
    for c in ("query", "pos"):
        if c in ds.column_names and ds.data.column(c).null_count:
            bad = int(np.flatnonzero(ds.data.column(c).is_null().to_numpy(zero_copy_only=False))[0])
            raise UserError(f"{source}: row {bad} has no '{c}' (null)")


_TEXT_COLUMNS = ("query", "pos")
_TEXT_LIST_COLUMNS = ("negs", "docs")


def _is_text_type(t) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_list_type(t) -> bool:
    import pyarrow as pa

    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_bad(ds, column: str, bad) -> tuple[int, object]:
    """The first row (and its value) of ``column`` for which ``bad(value)`` holds; (-1, None) if none.
    Only called once the Arrow type says something is wrong, so reading the column in Python is fine."""
    for i, value in enumerate(ds[column]):
        if bad(value):
            return i, value
    return -1, None


def _kind(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a text"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "null" if value is None else type(value).__name__


def check_row_types(ds, data_type: str, source: str) -> None:
    """Every row's values have the types training reads: ``query`` / ``pos`` texts, ``negs`` / ``docs``
    lists of texts, ``scores`` lists of finite numbers as long as ``docs``. The first offending row is
    named (rows count from 0) with the file, before training starts. Columns are checked by their Arrow
    type, so well-formed data costs no Python pass over its rows."""
    import pyarrow as pa

    _check_columns(ds, data_type, source)
    names = ds.column_names
    for column in _TEXT_COLUMNS:
        if column in names and column in REQUIRED[data_type] and not _is_text_type(ds.data.column(column).type):
            row, value = _first_bad(ds, column, lambda v: not isinstance(v, str))
            raise UserError(f"{source}: row {max(row, 0)}: '{column}' must be a text, got {_kind(value)} "
                            f"({_shown(value)})")
    for column in _TEXT_LIST_COLUMNS:
        if column not in names or column not in REQUIRED[data_type]:
            continue
        col = ds.data.column(column)
        if not (_is_list_type(col.type) and _is_text_type(col.type.value_type)) or pc.list_flatten(col).null_count:
            row, value = _first_bad(ds, column, lambda v: not isinstance(v, list)
                                    or not all(isinstance(x, str) for x in v))
            if row < 0:  # e.g. list<null>: every list is empty (the length checks say what is wrong)
                continue
            bad = value if not isinstance(value, list) else next((x for x in value if not isinstance(x, str)), None)
            what = f"got {_kind(value)} ({_shown(value)})" if not isinstance(value, list) else \
                f"one element is {_kind(bad)} ({_shown(bad)})"
            raise UserError(f"{source}: row {max(row, 0)}: '{column}' must be a list of texts, {what}")
    if data_type == "kd" and "scores" in names:
        col = ds.data.column("scores")
        numeric = _is_list_type(col.type) and (pa.types.is_integer(col.type.value_type)
                                                or pa.types.is_floating(col.type.value_type))
        if not numeric or pc.list_flatten(col).null_count:
            def not_numbers(v):
                return not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                           for x in v)
            row, value = _first_bad(ds, "scores", not_numbers)
            if row < 0:  # every list is empty: the docs / scores length check below speaks
                value = []
            bad = value if not isinstance(value, list) else next(
                (x for x in value if not isinstance(x, (int, float)) or isinstance(x, bool)), None)
            what = f"got {_kind(value)} ({_shown(value)})" if not isinstance(value, list) else \
                f"one score is {_kind(bad)} ({_shown(bad)})"
            if row >= 0:
                raise UserError(f"{source}: row {row}: 'scores' must be a list of numbers, {what}")
        flat = pc.list_flatten(col)
        if pa.types.is_floating(flat.type) and len(flat):
            finite = pc.is_finite(flat).to_numpy(zero_copy_only=False)
            if not finite.all():
                parents = pc.list_parent_indices(col).to_numpy(zero_copy_only=False)
                row = int(parents[int(np.flatnonzero(~finite)[0])])
                raise UserError(f"{source}: row {row}: 'scores' holds NaN or infinite values "
                                f"({int((~finite).sum())} such scores in the file); fix or drop these rows")
        docs = _list_lengths(ds, "docs", source)
        s_len = _list_lengths(ds, "scores", source)
        bad_rows = np.flatnonzero(s_len != docs)
        if len(bad_rows):
            r = int(bad_rows[0])
            raise UserError(f"{source}: row {r} has {docs[r]} docs but {s_len[r]} scores ({len(bad_rows)} such rows)")


class _ItemIndex:
    """Maps a flat item number to (row, position in row) through cumulative per-row counts."""

    def __init__(self, rows: np.ndarray, counts: np.ndarray):
        self.rows = rows.astype(np.int64)
        self.cum = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])

    def __len__(self) -> int:
        return int(self.cum[-1])

    def locate(self, item: int) -> tuple[int, int]:
        if not 0 <= item < len(self):
            raise IndexError(item)
        r = int(np.searchsorted(self.cum, item, side="right") - 1)
        return int(self.rows[r]), int(item - self.cum[r])


class PosNegsDataset:
    """``posnegs`` rows as items of one positive and ``sample_num_one_query`` negatives (module docstring)."""

    data_type = "posnegs"

    def __init__(self, ds, sample_num: int, source: str = "posnegs data"):
        if sample_num < 1:
            raise UserError(f"posnegs data needs sample_num_one_query >= 1 (negatives per item), got {sample_num}")
        if ds._indices is not None:
            ds = ds.flatten_indices()
        check_row_types(ds, "posnegs", source)
        self.ds, self.n, self.source = ds, sample_num, source
        lengths = _list_lengths(ds, "negs", source)
        short = np.flatnonzero(lengths < sample_num)
        if len(short):
            r = int(short[0])
            what = "an empty 'negs' list" if lengths[r] == 0 else f"{lengths[r]} negatives"
            raise UserError(f"{source}: row {r} has {what}, fewer than sample_num_one_query={sample_num} "
                            f"({len(short)} such rows)")
        self.index = _ItemIndex(np.arange(len(ds)), lengths // sample_num)
        tail = int((lengths % sample_num).sum())
        logger.info("%s: %d rows -> %d items of 1 positive + %d negatives (%d trailing negatives unused)",
                    source, len(ds), len(self.index), sample_num, tail)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict:
        row, chunk = self.index.locate(item)
        r = self.ds[row]
        negs = r["negs"][chunk * self.n:(chunk + 1) * self.n]
        return {"query": r["query"], "docs": [r["pos"], *negs], "scores": None}


def partial_shuffle(n: int, swap_times: int, rng: np.random.Generator) -> np.ndarray:
    """Identity, ``swap_times`` random swaps, or a full shuffle when swap_times >= n // 2."""
    idx = np.arange(n)
    if swap_times <= 0:
        return idx
    if swap_times >= n // 2:
        rng.shuffle(idx)
        return idx
    for i, j in rng.integers(0, n, size=(int(swap_times), 2)):
        idx[i], idx[j] = idx[j], idx[i]
    return idx


class KDDataset:
    """``kd`` rows as items of ``sample_num_one_query`` strided documents with their scores (module docstring)."""

    data_type = "kd"

    def __init__(self, ds, sample_num: int, swap_times: int = 0, first_rank_thresh: Optional[int] = None,
                 seed: int = 42, score_scale: float = 1.0, source: str = "kd data"):
        if sample_num < 2:
            raise UserError(f"kd data needs sample_num_one_query >= 2 documents per item, got {sample_num}")
        if ds._indices is not None:
            ds = ds.flatten_indices()
        check_row_types(ds, "kd", source)
        self.ds, self.s, self.swap_times, self.seed = ds, sample_num, int(swap_times), seed
        self.score_scale, self.source = score_scale, source
        self.has_scores = "scores" in ds.column_names
        lengths = _list_lengths(ds, "docs", source)
        short = np.flatnonzero(lengths < sample_num)
        if len(short):
            r = int(short[0])
            raise UserError(f"{source}: row {r} has {lengths[r]} docs, fewer than sample_num_one_query={sample_num} "
                            f"({len(short)} such rows)")
        rows = np.arange(len(ds))
        if "first_rank" in ds.column_names and first_rank_thresh is not None:
            fr = ds.data.column("first_rank").to_numpy(zero_copy_only=False)
            keep = (fr >= 0) & (fr <= first_rank_thresh)
            dropped = int((~keep).sum())
            logger.info("%s: first_rank filter 0 <= first_rank <= %s drops %d of %d rows",
                        source, first_rank_thresh, dropped, len(ds))
            if dropped == len(ds):
                raise UserError(f"{source}: the first_rank filter (<= {first_rank_thresh}) drops every row")
            rows = rows[keep]
        self.lengths = lengths
        self.index = _ItemIndex(rows, lengths[rows] // sample_num)
        logger.info("%s: %d rows -> %d items of %d documents (%s scores)", source, len(rows), len(self.index),
                    sample_num, "with" if self.has_scores else "no")

    def __len__(self) -> int:
        return len(self.index)

    def doc_indices(self, row: int, i: int) -> np.ndarray:
        n = int(self.lengths[row])
        step = n // self.s
        idx = partial_shuffle(n, self.swap_times, np.random.default_rng([self.seed, row]))
        return idx[i:i + self.s * step:step]

    def __getitem__(self, item: int) -> dict:
        row, i = self.index.locate(item)
        r = self.ds[row]
        pick = self.doc_indices(row, i)
        docs = [r["docs"][j] for j in pick]
        scores = [float(r["scores"][j]) * self.score_scale for j in pick] if self.has_scores else None
        return {"query": r["query"], "docs": docs, "scores": scores}


# ``kd-ids`` (the reference's rows of ids whose texts came from a remote service) is a valid
# data_type that training refuses with a message (``sparse.training.run.check_config``).
DATA_TYPES = (KDDataset.data_type, PosNegsDataset.data_type, "kd-ids")


def build_dataset(path: str, data_type: str, sample_num: int, swap_times: int = 0,
                  first_rank_thresh: Optional[int] = None, seed: int = 42, score_scale: float = 1.0):
    ds = load_rows(path)
    if data_type == "posnegs":
        return PosNegsDataset(ds, sample_num, source=path)
    if data_type == "kd":
        return KDDataset(ds, sample_num, swap_times, first_rank_thresh, seed, score_scale, source=path)
    raise UserError(f"data_type {data_type!r} is not supported for training here (use posnegs or kd)")


def dataset_paths(train_file: Optional[str], train_file_dir) -> list[str]:
    """The training sources: ``train_file``, or every dataset under ``train_file_dir`` (dir or list)."""
    if train_file and train_file_dir:
        raise UserError("set either train_file or train_file_dir, not both")
    if train_file:
        return [train_file]
    if not train_file_dir:
        raise UserError("no training data: set train_file or train_file_dir (a dataset saved with save_to_disk, "
                        "or a jsonl file); see README, section Training data")
    roots = train_file_dir if isinstance(train_file_dir, (list, tuple)) else [train_file_dir]
    out = []
    for root in roots:
        if not os.path.isdir(root):
            raise UserError(f"train_file_dir entry is not a directory: {root}")
        for name in sorted(os.listdir(root)):
            p = os.path.join(root, name)
            if (os.path.isdir(p) and (os.path.isfile(os.path.join(p, "dataset_info.json"))
                                      or os.path.isfile(os.path.join(p, "dataset_dict.json")))) \
                    or (os.path.isfile(p) and name.endswith(".jsonl")):
                out.append(p)
    if not out:
        raise UserError(f"train_file_dir {train_file_dir} holds no save_to_disk datasets or .jsonl files")
    return out


def dataset_repeats(paths: list[str], repeats: Optional[dict]) -> list[int]:
    """Passes per epoch of each dataset in ``paths`` (``dataset_repeats``: {name: n}, a name being the
    folder or file name, a ``.jsonl`` file's with or without its suffix); other datasets: 1."""
    names = [os.path.basename(os.path.normpath(p)) for p in paths]
    stems = [n[:-len(".jsonl")] if n.endswith(".jsonl") else n for n in names]
    repeats = {str(k): v for k, v in (repeats or {}).items()}
    unknown = sorted(k for k in repeats if k not in names and k not in stems)
    if unknown:
        raise UserError(f"dataset_repeats names {', '.join(unknown)}, but the training datasets are {', '.join(names)}")
    bad = [f"{k}: {v!r}" for k, v in repeats.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1]
    if bad:
        raise UserError(f"dataset_repeats takes whole numbers >= 1, got {', '.join(bad)}")
    return [repeats.get(n, repeats.get(s, 1)) for n, s in zip(names, stems)]
