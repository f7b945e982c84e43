"""Model zips as ml-commons reads them: deterministic bytes, 10 MB chunks, and its checks."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from sparse.errors import UserError, save_atomic

CHUNK_BYTES = 10_000_000  # ml-commons splits uploads into chunks of at most 10 MB
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # fixed entry times: the same model gives the same zip and hash

MODEL_SUFFIX = {"TORCH_SCRIPT": ".pt", "ONNX": ".onnx"}


def write_zip(path: str, entries: dict[str, bytes | str | Path]) -> str:
    """A zip of ``{name at the root: bytes, text, or a file's Path}``, entries sorted, times fixed."""
    def save(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(entries):
                data = entries[name]
                data = data.read_bytes() if isinstance(data, Path) else data
                info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, data)

    return save_atomic(path, save)


def chunk_ranges(size: int, chunk_bytes: int = CHUNK_BYTES) -> list[tuple[int, int]]:
    """(offset, length) of each upload chunk of a file of ``size`` bytes."""
    return [(start, min(chunk_bytes, size - start)) for start in range(0, size, chunk_bytes)] or [(0, 0)]


def read_chunk(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def check_model_zip(path: str, function_name: str, model_format: str) -> None:
    """The checks ml-commons makes when it unpacks a local model; raise ``UserError`` naming the problem.

    SPARSE_ENCODING: exactly one model file (``.pt`` or ``.onnx``) and ``tokenizer.json``, both at the
    root. SPARSE_TOKENIZE: ``tokenizer.json`` at the root, an optional ``idf.json`` mapping tokens
    to numbers, and no model file.
    """
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        root = [n for n in names if "/" not in n]
        if "tokenizer.json" not in root:
            raise UserError(f"{path}: no tokenizer.json at the root of the zip")
        json.loads(zf.read("tokenizer.json"))
        models = [n for n in names if n.endswith((".pt", ".onnx"))]
        if function_name == "SPARSE_TOKENIZE":
            if models:
                raise UserError(f"{path}: a SPARSE_TOKENIZE zip holds no model file, found {models}")
            if "idf.json" in root:
                idf = json.loads(zf.read("idf.json"))
                if not isinstance(idf, dict) or not all(isinstance(v, (int, float)) for v in idf.values()):
                    raise UserError(f"{path}: idf.json must map tokens to numbers")
            return
        wanted = [n for n in models if n.endswith(MODEL_SUFFIX[model_format])]
        if len(models) != 1 or len(wanted) != 1 or "/" in wanted[0]:
            raise UserError(f"{path}: a {model_format} zip must hold exactly one {MODEL_SUFFIX[model_format]} "
                            f"file at its root, found {models}")
