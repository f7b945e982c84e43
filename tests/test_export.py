"""``python -m sparse.export``: every exported artifact reproduces the checkpoint's vectors.

The OpenSearch zips are read in a fresh Python process with torch + tokenizers alone (no toolkit
import), the way ml-commons reads them: ``tokenizer.json`` tokenizes, the TorchScript model gives
a vocabulary-sized vector, its non-zero entries are named by ``decode([id], skip_special_tokens)``;
the tokenizer model weights each unique token by ``idf.json`` (1.0 when absent).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from sparse.errors import UserError
from sparse.export import packaging
from sparse.export.command import main as export_main
from sparse.modeling.encoder import SparseEncoder

N_DOCS = 50
# (activation, pooling, prune_ratio): what the TorchScript encoder must reproduce
VARIANTS = [("relu", "max", None), ("l1_relu", "max", None), ("relu", "sum", None), ("l1_relu", "max", 0.2)]

# Runs in a fresh interpreter: only torch, tokenizers and the zip files.
READER = r'''
import json, sys, zipfile, io, torch
from tokenizers import Tokenizer
jobs, texts, queries = json.load(open(sys.argv[1]))
out = {}
for name, path in jobs:
    zf = zipfile.ZipFile(path)
    tok = Tokenizer.from_str(zf.read("tokenizer.json").decode())
    pt = [n for n in zf.namelist() if n.endswith(".pt")]
    if pt:
        model = torch.jit.load(io.BytesIO(zf.read(pt[0])))
        rows = []
        for text in texts:  # one text per call, as ml-commons' translator does
            enc = tok.encode(text)
            feats = {"input_ids": torch.tensor([enc.ids]), "attention_mask": torch.tensor([enc.attention_mask])}
            with torch.no_grad():
                vec = model(feats)["output"][0]
            nz = torch.nonzero(vec).flatten().tolist()
            rows.append({tok.decode([i], skip_special_tokens=True): float(vec[i]) for i in nz})
        out[name] = rows
    else:
        idf = json.loads(zf.read("idf.json"))
        rows = []
        for text in queries:
            toks = {tok.decode([i], skip_special_tokens=True) for i in tok.encode(text).ids}
            rows.append({t: idf.get(t, 1.0) for t in toks if t})
        out[name] = rows
json.dump(out, open(sys.argv[2], "w"))
'''


def _assert_same_vectors(got: list[dict], want: list[dict], atol: float, what: str, zero: float = 0.0):
    """Same tokens (weights above ``zero``) with weights within ``atol``."""
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        g = {t: v for t, v in g.items() if v > zero}
        w = {t: v for t, v in w.items() if v > zero}
        assert set(g) == set(w), f"{what} text {i}: tokens differ: {sorted(set(g) ^ set(w))[:8]}"
        worst = max((abs(g[t] - w[t]) for t in w), default=0.0)
        assert worst <= atol, f"{what} text {i}: max weight difference {worst:g}"


@pytest.fixture(scope="module")
def scifact_sample(scifact_dir):
    with open(os.path.join(scifact_dir, "corpus.jsonl"), encoding="utf-8") as f:
        docs = [json.loads(next(f)) for _ in range(N_DOCS)]
    with open(os.path.join(scifact_dir, "queries.jsonl"), encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for line in f][:100]
    return [(d["title"] + " " + d["text"]).strip() for d in docs], queries


def _checkpoint(path, splade_path, idf_path, **settings) -> str:
    enc = SparseEncoder.from_pretrained(splade_path, settings=settings, idf_path=idf_path)
    with torch.no_grad():  # a learned IDF: some tokens negative, so relu(idf) matters
        enc.idf[::97] = -0.5
    enc.save_pretrained(str(path))
    return str(path)


def _export(*args) -> None:
    export_main([*map(str, args)])


@pytest.fixture(scope="module")
def exports(tmp_path_factory, splade_path, idf_path):
    """One checkpoint and its OpenSearch export per variant (no ONNX: tested once below)."""
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for act, pooling, prune in VARIANTS:
        tag = f"{act}-{pooling}-{prune}"
        ckpt = _checkpoint(root / f"ckpt-{tag}", splade_path, idf_path, activation=act, pooling=pooling,
                           prune_ratio=prune, max_seq_length=256)
        _export(ckpt, "--to", "opensearch", "--output", root / f"os-{tag}", "--no_onnx", "--name", "m")
        out[tag] = (ckpt, str(root / f"os-{tag}"))
    return out


def test_opensearch_zips_reproduce_the_checkpoint_in_a_fresh_process(exports, scifact_sample, tmp_path):
    texts, queries = scifact_sample
    jobs = []
    for tag, (_, folder) in exports.items():
        jobs.append((f"doc {tag}", os.path.join(folder, "m-sparse-encoding-torch_script.zip")))
    tag0 = next(iter(exports))
    jobs.append(("tokenize", os.path.join(exports[tag0][1], "m-sparse-tokenize.zip")))
    (tmp_path / "jobs.json").write_text(json.dumps([jobs, texts, queries]))
    (tmp_path / "reader.py").write_text(READER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, str(tmp_path / "reader.py"), str(tmp_path / "jobs.json"),
                    str(tmp_path / "out.json")], check=True, cwd=str(tmp_path), env=env, timeout=600)
    got = json.loads((tmp_path / "out.json").read_text())
    for tag, (ckpt, _) in exports.items():
        enc = SparseEncoder.from_pretrained(ckpt)
        want = enc.encode_documents(texts).to_token_dicts(enc.id_to_token)
        assert sum(map(len, want)) > 50 * N_DOCS  # real vectors, not empty ones
        _assert_same_vectors(got[f"doc {tag}"], want, 1e-4, f"TorchScript {tag}")
    enc = SparseEncoder.from_pretrained(exports[tag0][0])
    # zero IDF weights are exported as 1e-6 (Lucene rejects a query token weight of 0): below 1e-5 is zero
    _assert_same_vectors(got["tokenize"], enc.encode_queries(queries).to_token_dicts(enc.id_to_token), 1e-6,
                         "SPARSE_TOKENIZE", zero=1e-5)
    idf = json.loads(zipfile.ZipFile(os.path.join(exports[tag0][1], "m-sparse-tokenize.zip")).read("idf.json"))
    assert 0 < min(idf.values()) and max(idf.values()) <= 64  # what a neural_sparse query accepts
    assert sum(abs(v - 1e-6) < 1e-9 for v in idf.values()) >= 30000 // 97 - 10  # the negative IDF entries set above


def test_pruning_and_activation_change_the_exported_vectors(exports, scifact_sample):
    """The variants differ from each other, so the equality above tests each setting."""
    texts, _ = scifact_sample
    nnz = {}
    for tag, (ckpt, _) in exports.items():
        nnz[tag] = SparseEncoder.from_pretrained(ckpt).encode_documents(texts[:5]).nnz
    assert nnz["l1_relu-max-0.2"] < nnz["l1_relu-max-None"]


def test_zips_pass_ml_commons_checks_and_requests_match_them(exports):
    _, folder = exports["relu-max-None"]
    manifest = json.loads(open(os.path.join(folder, "manifest.json")).read())
    for role, model in manifest["models"].items():
        zip_path = os.path.join(folder, model["zip"])
        packaging.check_model_zip(zip_path, model["function_name"], model["model_format"])
        with open(zip_path, "rb") as f:
            data = f.read()
        body = json.load(open(os.path.join(folder, "requests", f"register_{role}.json")))
        meta = json.load(open(os.path.join(folder, "requests", f"register_{role}_meta.json")))
        assert body["model_content_hash_value"] == hashlib.sha256(data).hexdigest() == meta["model_content_hash_value"]
        assert body["model_content_size_in_bytes"] == len(data)
        assert meta["total_chunks"] == -(-len(data) // packaging.CHUNK_BYTES)
        assert body["url"].startswith("file://") and body["url"].endswith(model["zip"])
        assert b"".join(data[c["offset"]:c["offset"] + c["length"]] for c in model["chunks"]) == data
    names = zipfile.ZipFile(os.path.join(folder, "m-sparse-encoding-torch_script.zip")).namelist()
    assert sorted(names) == ["LICENSE", "m.pt", "tokenizer.json"]
    for name in manifest["requests"]:
        json.load(open(os.path.join(folder, name)))  # every request body is valid JSON


def test_check_model_zip_rejects_what_ml_commons_rejects(tmp_path):
    two = packaging.write_zip(str(tmp_path / "two.zip"), {"a.pt": b"x", "b.pt": b"y", "tokenizer.json": "{}"})
    with pytest.raises(UserError, match="exactly one"):
        packaging.check_model_zip(two, "SPARSE_ENCODING", "TORCH_SCRIPT")
    no_tok = packaging.write_zip(str(tmp_path / "nt.zip"), {"a.pt": b"x"})
    with pytest.raises(UserError, match="tokenizer.json"):
        packaging.check_model_zip(no_tok, "SPARSE_ENCODING", "TORCH_SCRIPT")


def test_pipeline_carries_the_pruning_and_quantization_report_counts(exports, scifact_sample):
    _, folder = exports["l1_relu-max-0.2"]
    proc = json.load(open(os.path.join(folder, "requests", "ingest_pipeline.json")))["processors"][0]["sparse_encoding"]
    assert proc["prune_type"] == "max_ratio" and proc["prune_ratio"] == 0.2
    ckpt, folder = exports["relu-sum-None"]  # sum pooling gives weights far above 3
    report = json.load(open(os.path.join(folder, "quantization.json")))
    enc = SparseEncoder.from_pretrained(ckpt)
    from sparse.export.command import SAMPLE_TEXTS

    values = enc.encode_documents(SAMPLE_TEXTS).values
    doc = report["document_weights"]
    assert doc["outside_default_range"] == int((values > 3.0).sum()) > 0
    assert doc["max"] == pytest.approx(float(values.max()), rel=1e-6)
    mapping = json.load(open(os.path.join(folder, "requests", "index_sparse_vector.json")))
    params = mapping["mappings"]["properties"]["sparse_embedding"]["method"]["parameters"]
    assert params["quantization_ceiling_ingest"] >= doc["max"]


def test_onnx_export_matches_the_checkpoint(tmp_path, splade_path, idf_path, scifact_sample):
    ort = pytest.importorskip("onnxruntime")
    texts, _ = scifact_sample
    ckpt = _checkpoint(tmp_path / "ckpt", splade_path, idf_path, activation="l1_relu", max_seq_length=128)
    _export(ckpt, "--to", "onnx", "--output", tmp_path / "onnx")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tmp_path / "onnx" / "tokenizer.json"))
    tok.enable_padding()
    encs = tok.encode_batch(texts[:16])
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    out = session.run(None, {"input_ids": np.array([e.ids for e in encs], dtype=np.int64),
                             "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64)})[0]
    enc = SparseEncoder.from_pretrained(ckpt)
    want = enc.encode_documents(texts[:16]).to_dense().numpy()
    assert out.shape == want.shape
    assert np.abs(out - want).max() < 1e-4
    assert ((out > 0) == (want > 0)).all()


def _ndcg_at_10(vectors_docs, vectors_queries, doc_ids, qids, qrels):
    from sparse.evaluation.metrics import evaluate_run
    from sparse.retrieval.embedded import EmbeddedIndex

    index = EmbeddedIndex()
    index.add(doc_ids, vectors_docs)
    top_ids, top_scores = index.search(vectors_queries, 10)
    run = {q: dict(zip(ids, map(float, sc))) for q, ids, sc in zip(qids, top_ids, top_scores)}
    return evaluate_run(qrels, run, ["NDCG@10"])["NDCG@10"]


def test_sentence_transformers_export_gives_the_same_vectors_and_ndcg(tmp_path, splade_path, idf_path, scifact_dir,
                                                                       random_subset, beir_files):
    st = pytest.importorskip("sentence_transformers")
    from sparse.modeling.vectors import SparseBatch

    enc = SparseEncoder.from_pretrained(splade_path, settings={"max_seq_length": 256}, idf_path=idf_path)
    with torch.no_grad():  # special tokens with high logits: the export must still zero them
        enc.mlm.get_output_embeddings().bias[enc.special_ids] = 30.0
        enc.idf[::89] = -1.0
    enc.save_pretrained(str(tmp_path / "ckpt"))
    _export(tmp_path / "ckpt", "--to", "sentence-transformers", "--output", tmp_path / "st")
    model = st.SparseEncoder(str(tmp_path / "st"), device="cpu")
    subset = beir_files(random_subset(scifact_dir, tmp_path / "sub", 40, 200, split="test"), split="test")
    docs = [subset["text"][d] for d in subset["doc_ids"]]
    queries = [subset["queries"][q] for q in subset["qids"]]

    def to_batch(t):
        return SparseBatch.from_dense(t.to_dense().float())

    st_docs = to_batch(model.encode_document(docs, convert_to_tensor=True, batch_size=32))
    st_queries = to_batch(model.encode_query(queries, convert_to_tensor=True))
    ours_docs, ours_queries = enc.encode_documents(docs), enc.encode_queries(queries)
    _assert_same_vectors(st_docs.to_token_dicts(enc.id_to_token), ours_docs.to_token_dicts(enc.id_to_token), 1e-4,
                         "sentence-transformers documents")
    _assert_same_vectors(st_queries.to_token_dicts(enc.id_to_token), ours_queries.to_token_dicts(enc.id_to_token),
                         1e-4, "sentence-transformers queries")
    ndcg_st = _ndcg_at_10(st_docs, st_queries, subset["doc_ids"], subset["qids"], subset["qrels"])
    ndcg_ours = _ndcg_at_10(ours_docs, ours_queries, subset["doc_ids"], subset["qids"], subset["qrels"])
    assert ndcg_st == pytest.approx(ndcg_ours, abs=1e-6) and ndcg_ours > 0.3


def test_unsupported_sentence_transformers_settings_fail_cleanly(tmp_path, splade_path, capsys):
    enc = SparseEncoder.from_pretrained(splade_path, settings={"activation": "l2_relu"})
    enc.save_pretrained(str(tmp_path / "ckpt"))
    with pytest.raises(SystemExit) as exit_info:
        _export(tmp_path / "ckpt", "--to", "sentence-transformers", "--output", tmp_path / "st")
    assert exit_info.value.code == 2
    assert "l2_relu" in capsys.readouterr().err
    assert not (tmp_path / "st").exists()  # nothing half-written left behind


def test_model_card_holds_the_checkpoints_results(tmp_path, splade_path):
    enc = SparseEncoder.from_pretrained(splade_path, settings={"max_seq_length": 64})
    ckpt = tmp_path / "run"
    enc.save_pretrained(str(ckpt))
    results = ckpt / "beir_eval" / "final" / "results"
    results.mkdir(parents=True)
    (results / "scifact.json").write_text(json.dumps({
        "dataset": "scifact", "split": "test", "metrics": {"NDCG@10": 0.61234},
        "sparsity": {"flops": 1.5, "q_length": 12.0, "d_length": 210.5}}))
    _export(ckpt, "--to", "onnx", "--output", tmp_path / "out")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| scifact | test | 0.6123 | 1.500 | 12.0 | 210.5 |" in card
    assert "arXiv:2411.04403" in card and "Exploring" in card


# ----------------------------------------------------------------------------- register (fake ml-commons)
class _FakeMLCommons(BaseHTTPRequestHandler):
    """Just enough of the ml-commons and index APIs to follow a register -> deploy -> query run."""

    state: dict = {}

    def log_message(self, *args):
        pass

    def _reply(self, body, status=200):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("content-length", 0)))

    def do_GET(self):
        s, parts = self.state, self.path.split("?")[0].strip("/").split("/")
        if parts[:3] == ["_plugins", "_ml", "models"]:
            model = s["models"][parts[3]]
            data = b"".join(model["chunks"][i] for i in sorted(model["chunks"]))
            done = hashlib.sha256(data).hexdigest() == model["meta"]["model_content_hash_value"]
            return self._reply({"model_state": "REGISTERED" if done else "REGISTERING"})
        if parts[:3] == ["_plugins", "_ml", "tasks"]:
            return self._reply({"state": "COMPLETED"})
        return self._reply({}, 404)

    def do_POST(self):
        s, parts, body = self.state, self.path.split("?")[0].strip("/").split("/"), self._body()
        s["calls"].append(("POST", "/".join(parts)))
        if parts[-1] == "_register" and parts[2] == "model_groups":
            return self._reply({"model_group_id": "group-1", "status": "CREATED"})
        if parts[-1] == "_register_meta":
            model_id = f"model-{len(s['models'])}"
            s["models"][model_id] = {"meta": json.loads(body), "chunks": {}}
            return self._reply({"model_id": model_id, "status": "CREATED"})
        if len(parts) == 6 and parts[4] == "upload_chunk":
            s["models"][parts[3]]["chunks"][int(parts[5])] = body
            return self._reply({"status": "Uploaded"})
        if parts[-1] == "_deploy":
            return self._reply({"task_id": "task-" + parts[3], "status": "CREATED"})
        if parts[-1] == "_search":
            s["search"] = json.loads(body)
            return self._reply({"hits": {"total": {"value": 1}, "hits": [{"_id": "0", "_score": 1.0}]}})
        return self._reply({"error": self.path}, 404)

    def do_PUT(self):
        s, parts, body = self.state, self.path.split("?")[0].strip("/").split("/"), self._body()
        s["calls"].append(("PUT", "/".join(parts)))
        if parts[0] == "_ingest":
            s["pipeline"] = json.loads(body)
            return self._reply({"acknowledged": True})
        if len(parts) == 1:
            s["index"] = json.loads(body)
            return self._reply({"acknowledged": True, "index": parts[0]})
        s.setdefault("docs", []).append(json.loads(body))
        return self._reply({"result": "created"})


def test_register_sends_chunks_that_reassemble_to_the_zip(exports, monkeypatch, tmp_path):
    import shutil

    from sparse.export.register import register

    folder = str(tmp_path / "export")
    shutil.copytree(exports["relu-max-None"][1], folder)
    _FakeMLCommons.state = {"models": {}, "calls": []}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeMLCommons)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("OPENSEARCH_USER", "alice")
    monkeypatch.setenv("OPENSEARCH_PASSWORD", "s3cret-value")
    try:
        result = register(f"http://127.0.0.1:{server.server_port}", folder, poll_s=0.01, wait_s=10)
    finally:
        server.shutdown()
    s = _FakeMLCommons.state
    manifest = json.load(open(os.path.join(folder, "manifest.json")))
    assert set(result["model_ids"]) == {"document_encoder", "query_tokenizer"}
    for role, model_id in result["model_ids"].items():
        with open(os.path.join(folder, manifest["models"][role]["zip"]), "rb") as f:
            data = f.read()
        got = b"".join(s["models"][model_id]["chunks"][i] for i in sorted(s["models"][model_id]["chunks"]))
        assert got == data and s["models"][model_id]["meta"]["model_group_id"] == "group-1"
    assert s["pipeline"]["processors"][0]["sparse_encoding"]["model_id"] == result["model_ids"]["document_encoder"]
    assert s["index"]["settings"]["index"]["default_pipeline"] == manifest["pipeline"]
    query = s["search"]["query"]["neural_sparse"]["sparse_embedding"]
    assert query["model_id"] == result["model_ids"]["query_tokenizer"]
    assert "s3cret-value" not in open(os.path.join(folder, "registered.json")).read()


@pytest.mark.skipif(not os.environ.get("OPENSEARCH_URL"), reason="needs a real cluster (OPENSEARCH_URL)")
def test_register_end_to_end_on_a_real_cluster(exports, tmp_path):
    import shutil

    from sparse.export.register import register

    folder = str(tmp_path / "export")
    shutil.copytree(exports["relu-max-None"][1], folder)
    result = register(os.environ["OPENSEARCH_URL"], folder)
    assert result["top_hit"] is not None
