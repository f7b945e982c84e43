"""Shared fixtures: tiny in-test models, the small real assets (fetched once, cached), a BEIR
writer, the osmem-server, figure capture, and an independent SPLADE computation with a ranking
comparison.

No test module imports another test module (or this file): everything shared is a fixture here,
so plain ``pytest`` and ``python -m pytest`` from the repository root both collect every test.
"""

from __future__ import annotations

import inspect
import json
import os
import random
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TESTS_DIR = Path(__file__).resolve().parent
FIXTURES_DIR = TESTS_DIR / "fixtures"

BERT_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "dog", "sat", "on", "mat",
               "a", "bird", "flew", "over", "house", "##s", "red", "blue", "green", "is", "big", "small"]


# ----------------------------------------------------------------------------- tiny models
def make_tiny_mlm(tmp_path, arch: str = "bert", seed: int = 0):
    """A randomly initialised tiny masked-LM + a real WordPiece tokenizer over a toy vocabulary."""
    from transformers import (BertConfig, BertForMaskedLM, BertTokenizerFast, DistilBertConfig,
                              DistilBertForMaskedLM)

    torch.manual_seed(seed)
    vocab_map = {tok: i for i, tok in enumerate(BERT_TOKENS)}
    try:  # transformers >= 5 takes the vocabulary itself
        tokenizer = BertTokenizerFast(vocab=vocab_map, do_lower_case=True)
    except TypeError:  # transformers 4.x reads a vocab file
        path = Path(tmp_path) / "vocab.txt"
        path.write_text("\n".join(BERT_TOKENS) + "\n")
        tokenizer = BertTokenizerFast(vocab_file=str(path), do_lower_case=True)
    assert len(tokenizer) == len(BERT_TOKENS)
    vocab = len(BERT_TOKENS)
    if arch == "bert":
        config = BertConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=64)
        model = BertForMaskedLM(config)
    elif arch == "distilbert":
        config = DistilBertConfig(vocab_size=vocab, dim=16, n_layers=2, n_heads=2, hidden_dim=32,
                                  max_position_embeddings=64)
        model = DistilBertForMaskedLM(config)
    else:
        raise ValueError(arch)
    return model.eval(), tokenizer


@pytest.fixture(scope="session")
def tiny_mlm_factory():
    """``make(tmp_path, arch="bert", seed=0) -> (model, tokenizer)``, for module-scoped fixtures."""
    return make_tiny_mlm


def save_tiny_checkpoint(root, seed: int) -> tuple:
    """A tiny BERT masked-LM without dropout (runs are then deterministic) saved in ``root/model``;
    returns (model, tokenizer)."""
    model, tok = make_tiny_mlm(root, "bert", seed=seed)
    model.config.hidden_dropout_prob = 0.0
    model.config.attention_probs_dropout_prob = 0.0
    model.save_pretrained(Path(root) / "model")
    tok.save_pretrained(Path(root) / "model")
    return model, tok


@pytest.fixture(scope="session")
def tiny_checkpoint_factory():
    """``save(root, seed) -> (model, tokenizer)``: a dropout-free tiny BERT saved in ``root/model``."""
    return save_tiny_checkpoint


@pytest.fixture
def tiny_bert(tmp_path):
    return make_tiny_mlm(tmp_path, "bert")


@pytest.fixture
def tiny_distilbert(tmp_path):
    return make_tiny_mlm(tmp_path, "distilbert")


# ----------------------------------------------------------------------------- real assets
@pytest.fixture(scope="session")
def splade_path() -> str:
    from sparse.assets import splade_model

    return str(splade_model())


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from sparse.assets import minilm_model

    return str(minilm_model())


@pytest.fixture(scope="session")
def idf_path() -> str:
    from sparse.assets import idf_file

    return str(idf_file())


@pytest.fixture(scope="session")
def scifact_dir() -> str:
    from sparse.assets import beir_dataset

    return str(beir_dataset("scifact"))


@pytest.fixture(scope="session")
def splade_encoder(splade_path, idf_path):
    from sparse.modeling.encoder import SparseEncoder

    return SparseEncoder.from_pretrained(splade_path, idf_path=idf_path)


# ----------------------------------------------------------------------------- BEIR files
def write_beir(root, corpus, queries, qrels, split="test"):
    """A BEIR directory (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) from plain dicts."""
    root = str(root)
    os.makedirs(os.path.join(root, "qrels"), exist_ok=True)
    with open(os.path.join(root, "corpus.jsonl"), "w") as f:
        for did, doc in corpus.items():
            f.write(json.dumps({"_id": did, **doc}) + "\n")
    with open(os.path.join(root, "queries.jsonl"), "w") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text, "metadata": {}}) + "\n")
    with open(os.path.join(root, "qrels", f"{split}.tsv"), "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in qrels.items():
            for did, g in docs.items():
                f.write(f"{qid}\t{did}\t{g}\n")
    return root


@pytest.fixture(scope="session")
def beir_writer():
    """``write(root, corpus, queries, qrels, split="test") -> root``."""
    return write_beir


def make_random_subset(src: str, dst, n_queries: int, n_extra_docs: int, split: str = "train", seed: int = 0) -> str:
    """A BEIR dir with the first ``n_queries`` queries of ``split``, their judged docs and random others."""
    dst = Path(dst)
    os.makedirs(dst / "qrels", exist_ok=True)
    with open(os.path.join(src, "qrels", f"{split}.tsv"), encoding="utf-8") as f:
        header, *lines = f.read().splitlines()
    rows = [line.split("\t") for line in lines if line.strip()]
    qids = sorted({r[0] for r in rows})[:n_queries]
    keep = [r for r in rows if r[0] in set(qids)]
    with open(os.path.join(src, "corpus.jsonl"), encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    judged = {r[1] for r in keep}
    others = [d for d in docs if d["_id"] not in judged]
    random.Random(seed).shuffle(others)
    chosen = [d for d in docs if d["_id"] in judged] + others[:n_extra_docs]
    (dst / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in chosen), encoding="utf-8")
    with open(os.path.join(src, "queries.jsonl"), encoding="utf-8") as f:
        (dst / "queries.jsonl").write_text(f.read(), encoding="utf-8")
    (dst / "qrels" / f"{split}.tsv").write_text(header + "\n" + "".join("\t".join(r) + "\n" for r in keep),
                                                encoding="utf-8")
    return str(dst)


@pytest.fixture(scope="session")
def random_subset():
    """``make(src, dst, n_queries, n_extra_docs, split="train", seed=0) -> dst``."""
    return make_random_subset


def read_beir_files(folder, split: str = "train") -> dict:
    """A BEIR folder read with json alone (not through the toolkit), for independent checks:
    ``text`` {doc id: title + " " + text}, ``qrels`` {qid: {doc id: grade}}, ``queries`` {qid: text}
    of the judged queries, ``doc_ids`` and ``qids`` sorted."""
    with open(os.path.join(folder, "corpus.jsonl"), encoding="utf-8") as f:
        docs = [json.loads(line) for line in f if line.strip()]
    text = {d["_id"]: ((d.get("title") or "") + " " + (d.get("text") or "")).strip() for d in docs}
    qrels: dict = {}
    with open(os.path.join(folder, "qrels", f"{split}.tsv"), encoding="utf-8") as f:
        for line in f.read().splitlines()[1:]:
            if line.strip():
                q, d, g = line.split("\t")
                qrels.setdefault(q, {})[d] = int(g)
    with open(os.path.join(folder, "queries.jsonl"), encoding="utf-8") as f:
        queries = {r["_id"]: r["text"] for r in map(json.loads, f) if r["_id"] in qrels}
    return {"text": text, "qrels": qrels, "queries": queries, "doc_ids": sorted(text), "qids": sorted(qrels)}


@pytest.fixture(scope="session")
def beir_files():
    """``read(folder, split="train") -> {text, qrels, queries, doc_ids, qids}`` (``read_beir_files``)."""
    return read_beir_files


# ----------------------------------------------------------------------------- osmem-server
OSMEM_START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_ready(proc: subprocess.Popen, url: str, timeout: float) -> bool:
    """Poll ``url`` until it answers (any HTTP status), the process exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return True
        except urllib.error.HTTPError:
            return True  # it answered
        except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
            time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            proc.stdin.close()  # osmem exits when stdin closes
        except OSError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def osmem_url(tmp_path_factory):
    """One osmem-server for the session on a free 127.0.0.1 port; ready when its HTTP port answers
    (bounded wait; a server that does not come up fails the test with its log)."""
    from osmem_server import resolve_binary

    log = tmp_path_factory.mktemp("osmem") / "server.log"
    proc, url, why = None, None, ""
    for _ in range(3):  # the port may be taken between picking and binding: try another
        url = f"http://127.0.0.1:{_free_port()}"
        with open(log, "w") as err:
            proc = subprocess.Popen([resolve_binary(), "--addr", url[len("http://"):], "--no-ja",
                                     "--parent-pid", str(os.getpid())],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        if _http_ready(proc, url, OSMEM_START_TIMEOUT):
            break
        _stop(proc)
        why = f"exit status {proc.returncode}; log: {log.read_text()[-2000:]}"
    else:
        pytest.fail(f"osmem-server did not come up (3 tries, {OSMEM_START_TIMEOUT:.0f} s each): {why}")
    try:
        yield url
    finally:
        _stop(proc)


# ----------------------------------------------------------------------------- figures
def assert_real_png(path, min_w=300, min_h=200):
    """A PNG file of at least ``min_w`` x ``min_h`` pixels with more than 10 colours."""
    import matplotlib.image as mpimg

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    h, w = img.shape[:2]
    assert w >= min_w and h >= min_h, (w, h)
    colours = np.unique(img.reshape(-1, img.shape[-1]).round(3), axis=0)
    assert len(colours) > 10, f"{path} has only {len(colours)} colours"


@pytest.fixture(scope="session")
def real_png():
    """``check(path, min_w=300, min_h=200)``: the file is a real, non-blank PNG."""
    return assert_real_png


def figure_data(fig) -> dict:
    """What a matplotlib figure shows, as plain JSON-able data: per axes (in order) its title,
    axis labels and scale, tick labels, lines, bars, scatter points, annotations and legend."""
    from matplotlib.colors import to_hex
    from matplotlib.patches import Rectangle

    def floats(values):
        return [float(v) for v in np.asarray(values, dtype=float).ravel()]

    axes = []
    for ax in fig.axes:
        legend = ax.get_legend()
        axes.append({
            "title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
            "xscale": ax.get_xscale(), "xticklabels": [t.get_text() for t in ax.get_xticklabels()],
            "lines": [{"x": floats(ln.get_xdata()), "y": floats(ln.get_ydata()), "label": ln.get_label(),
                       "color": to_hex(ln.get_color()), "marker": str(ln.get_marker())}
                      for ln in ax.get_lines()],
            "bars": [{"x": float(p.get_x() + p.get_width() / 2), "height": float(p.get_height()),
                      "color": to_hex(p.get_facecolor())}
                     for p in ax.patches if isinstance(p, Rectangle)],
            "scatter": [{"points": [floats(o) for o in c.get_offsets()],
                         "filled": bool(len(c.get_facecolors())) and bool(np.any(c.get_facecolors()[:, 3] > 0)),
                         "edgecolor": to_hex(c.get_edgecolors()[0]) if len(c.get_edgecolors()) else None}
                        for c in ax.collections],
            "texts": [{"text": t.get_text(), "xy": floats(t.xy)} for t in ax.texts if hasattr(t, "xy")],
            "legend": [t.get_text() for t in legend.get_texts()] if legend else [],
            "legend_title": legend.get_title().get_text() if legend else None,
        })
    suptitle = getattr(fig, "_suptitle", None)
    return {"suptitle": suptitle.get_text() if suptitle is not None else None, "axes": axes}


@pytest.fixture
def captured_figures(monkeypatch):
    """{absolute path: figure_data} of every figure saved (``Figure.savefig``) during the test."""
    from matplotlib.figure import Figure

    captured: dict[str, dict] = {}
    original = Figure.savefig

    def savefig(self, fname, *args, **kwargs):
        out = original(self, fname, *args, **kwargs)
        captured[os.path.abspath(os.fspath(fname))] = figure_data(self)
        return out

    monkeypatch.setattr(Figure, "savefig", savefig)
    return captured


_PROBE_MAIN = """
import json, os, runpy, sys
from matplotlib.figure import Figure
_original_savefig = Figure.savefig
def _probe_savefig(self, fname, *args, **kwargs):
    out = _original_savefig(self, fname, *args, **kwargs)
    with open(os.fspath(fname) + ".figure.json", "w") as f:
        json.dump(figure_data(self), f)
    return out
Figure.savefig = _probe_savefig
module = sys.argv[1]
sys.argv = [module] + sys.argv[2:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="session")
def figure_probe():
    """``command(module, *args)``: a ``python -m module args`` command line whose process also
    writes ``<png>.figure.json`` (``figure_data``) next to every figure it saves."""
    source = "import numpy as np\n" + textwrap.dedent(inspect.getsource(figure_data)) + _PROBE_MAIN

    def command(module: str, *args: str) -> list[str]:
        return [sys.executable, "-c", source, module, *args]

    return command


# ----------------------------------------------------------------------------- independent SPLADE
class IndependentSplade:
    """SPLADE vectors straight from the Hugging Face masked LM, one text at a time, sharing no code
    with ``sparse``:

        document  w_j = max over the text's tokens of log(1 + relu(logit_j)), special tokens j zeroed
        query     inference-free: q_j = idf[token j] for the unique non-special tokens of the query
                  (``idf.json``; 1.0 for a token it lacks), or with ``inf_free=False`` the document formula
        score     q . d in float64 (brute force over every document)
    """

    def __init__(self, model_dir: str, idf_path: str = None):
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.mlm = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
        self.special = sorted(set(self.tok.all_special_ids))
        self.vocab_size = self.mlm.get_output_embeddings().weight.shape[0]
        self.idf = None
        if idf_path:
            with open(idf_path, encoding="utf-8") as f:
                idf = json.load(f)
            inv = {i: t for t, i in self.tok.get_vocab().items()}
            self.idf = np.array([float(idf.get(inv.get(i), 1.0)) for i in range(self.vocab_size)])
        self._docs: dict[tuple[str, int], np.ndarray] = {}

    @torch.no_grad()
    def doc_vector(self, text: str, max_length: int) -> np.ndarray:
        key = (text, max_length)
        if key not in self._docs:
            enc = self.tok(text, truncation=True, max_length=max_length, return_tensors="pt")
            logits = self.mlm(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[0]
            w = torch.log1p(torch.relu(logits.max(dim=0).values.double()))
            w[self.special] = 0
            self._docs[key] = w.numpy()
        return self._docs[key]

    def query_vector(self, text: str, max_length: int, inf_free: bool = True) -> np.ndarray:
        if not inf_free:
            return self.doc_vector(text, max_length)
        q = np.zeros(self.vocab_size)
        ids = set(self.tok(text, truncation=True, max_length=max_length)["input_ids"]) - set(self.special)
        for tid in ids:
            q[tid] = max(self.idf[tid], 0.0)
        return q

    def scores(self, query_texts, doc_texts, max_length: int, query_max_length: int = None,
               inf_free: bool = True) -> np.ndarray:
        """(n_queries, n_docs) float64 scores."""
        import scipy.sparse as sp

        docs = sp.csr_matrix(np.stack([self.doc_vector(t, max_length) for t in doc_texts]))
        queries = np.stack([self.query_vector(t, query_max_length or max_length, inf_free) for t in query_texts])
        return np.asarray((docs @ queries.T).T)


def rank_by_score(doc_ids, scores, k=None):
    """Documents with score > 0, best first, ties broken by document id: (ids, scores)."""
    hits = sorted((-float(s), d) for d, s in zip(doc_ids, scores) if s > 0)[:k]
    return [d for _, d in hits], [-s for s, _ in hits]


def assert_same_ranking(got_ids, want_ids, score_of, got_scores=None, rtol=1e-5, atol=1e-6, where=""):
    """``got_ids`` equals ``want_ids`` position by position, except where the two documents'
    independent scores (``score_of``) are equal within tolerance: a near tie that two float
    computations may order either way. With ``got_scores``: each equals its document's score."""
    assert len(got_ids) == len(want_ids), f"{where}: {len(got_ids)} documents, want {len(want_ids)}"
    assert len(set(got_ids)) == len(got_ids), f"{where}: repeated documents {got_ids}"
    for i, (g, w) in enumerate(zip(got_ids, want_ids)):
        if g != w:
            assert g in score_of and np.isclose(score_of[g], score_of[w], rtol=rtol, atol=atol), \
                f"{where} rank {i}: got {g} (score {score_of.get(g)}), want {w} (score {score_of[w]})"
    if got_scores is not None:
        np.testing.assert_allclose(got_scores, [score_of[g] for g in got_ids], rtol=rtol, atol=atol,
                                   err_msg=where)


@pytest.fixture(scope="session")
def independent_splade(splade_path, idf_path):
    """The offline SPLADE model and idf.json, computed by hand (``IndependentSplade``)."""
    return IndependentSplade(splade_path, idf_path)


@pytest.fixture(scope="session")
def ranking():
    """``rank(doc_ids, scores, k=None)`` and ``check(got_ids, want_ids, score_of, ...)``."""
    class Ranking:
        rank = staticmethod(rank_by_score)
        check = staticmethod(assert_same_ranking)

    return Ranking


@pytest.fixture(autouse=True)
def _restore_logging_and_threads():
    """An in-process run adds log handlers (its log file, a stream on the test's captured output)
    and may set torch's thread count; both are put back after each test, so a later test never
    logs into this test's closed stream or runs with another thread count."""
    import logging

    import torch

    count = torch.get_num_threads()
    loggers = [logging.getLogger(), logging.getLogger("sparse")]
    for lg in loggers:  # handlers an earlier test left on its captured (now closed) stream
        for handler in [h for h in lg.handlers if getattr(getattr(h, "stream", None), "closed", False)]:
            lg.removeHandler(handler)
    before = [list(lg.handlers) for lg in loggers]
    yield
    torch.set_num_threads(count)
    for lg, kept in zip(loggers, before):
        for handler in [h for h in lg.handlers if h not in kept]:
            lg.removeHandler(handler)
            handler.close()


# ----------------------------------------------------------------------------- headless Chromium
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_INSTALL_TIMEOUT = 900.0


def _find_chromium():
    import shutil

    return next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a headless-capable Chromium: found on PATH, else installed with ``apt-get install -y
    chromium`` (as root, package lists refreshed if the first try fails); the test is skipped with
    the reason when neither works (no root, no apt-get, no network to the package mirror)."""
    import shutil

    found = _find_chromium()
    if found:
        return found
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip("chromium is not installed and cannot be (needs root and apt-get): apt-get install chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log = []
    install = ["apt-get", "install", "-y", "chromium"]
    for cmd in (install, ["apt-get", "update"], install):
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=CHROMIUM_INSTALL_TIMEOUT)
            log.append(f"{' '.join(cmd)}: exit {done.returncode} {done.stderr.strip()[-200:]}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.append(f"{' '.join(cmd)}: {exc}")
        found = _find_chromium()
        if found:
            return found
    pytest.skip("chromium could not be installed: " + " | ".join(log))


@pytest.fixture(scope="session")
def dump_dom(chromium):
    """``dump(html_path, timeout=120) -> str``: the page's DOM after load, from headless Chromium."""
    def dump(path, timeout: float = 120.0) -> str:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--allow-file-access-from-files", "--dump-dom", Path(path).resolve().as_uri()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-1000:]}"
        return done.stdout
    return dump
