"""Fixtures of the fault suite: entry points run in-process, a tiny checkpoint with training data
and a tiny BEIR set, and a fault-injecting HTTP proxy in front of the osmem-server."""

from __future__ import annotations

import http.client
import http.server
import importlib.util
import json
import random
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
WORDS = "the cat dog sat on mat a bird flew over house red blue green is big small".split()
ENTRY_POINTS = ("train_ir", "evaluate_beir", "data_preparation", "demo_train_data")


# ----------------------------------------------------------------------------- entry points in-process
def _entry_module(name: str):
    spec = importlib.util.spec_from_file_location(f"_entry_{name}", REPO_ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def entry_points():
    """{name: (main, usage)} of the four entry points; ``main(argv)`` is what ``run_cli`` calls."""
    return {name: (module.main, module.__doc__) for name in ENTRY_POINTS for module in [_entry_module(name)]}


@pytest.fixture
def cli(entry_points, capsys):
    """``run(entry, *argv) -> (exit code, stdout, stderr)``: the entry point through ``run_cli``, in-process;
    ``"export"`` is ``python -m sparse.export``."""
    from sparse.config import run_cli
    from sparse.export.command import main as export_main

    def run(entry: str, *argv: str):
        try:
            if entry == "export":
                export_main(list(argv))
            else:
                main, usage = entry_points[entry]
                run_cli(main, list(argv), usage=usage)
            code = 0
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


# ----------------------------------------------------------------------------- tiny model, data, BEIR
def _texts(seed: int = 1, n: int = 40) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) for _ in range(n)]


@pytest.fixture(scope="session")
def faults_env(tmp_path_factory, tiny_checkpoint_factory, beir_writer):
    """A tiny BERT checkpoint (no dropout), posnegs / kd JSONL training files, and a tiny BEIR set."""
    root = tmp_path_factory.mktemp("faults")
    tiny_checkpoint_factory(root, seed=7)
    texts = _texts()
    rng = random.Random(2)
    rows = [{"query": " ".join(rng.choice(texts).split()[:4]), "pos": rng.choice(texts),
             "negs": [rng.choice(texts) for _ in range(3)]} for _ in range(24)]
    write_jsonl(root / "posnegs.jsonl", rows)
    write_jsonl(root / "kd.jsonl", [{"query": r["query"], "docs": [r["pos"], *r["negs"]],
                                     "scores": [4.0, 3.0, 2.0, 1.0]} for r in rows])
    corpus = {f"d{i}": {"title": "", "text": t} for i, t in enumerate(texts)}
    queries = {f"q{i}": texts[i][:20] for i in range(6)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(6)}
    beir_writer(root / "beir" / "tinyset", corpus, queries, qrels, split="test")
    return {"root": root, "model": str(root / "model"), "posnegs": str(root / "posnegs.jsonl"),
            "kd": str(root / "kd.jsonl"), "beir_dir": str(root / "beir"), "rows": rows}


def write_jsonl(path, rows) -> str:
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def jsonl_writer():
    """``write(path, rows) -> path``: one JSON object per line."""
    return write_jsonl


# ----------------------------------------------------------------------------- fault-injecting proxy
class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream`` that injects faults into matching requests.

    ``plan(path_part, faults)``: the next requests whose path contains ``path_part`` get these
    faults in order (then pass through): ``"pass"`` (none), ``"drop"`` (close without an answer), ``"delay:<s>"``
    (wait, then forward), ``"429"`` / ``"503"`` (that status, nothing forwarded), ``"partial"``
    (forward, then mark the first item of the _bulk / _msearch answer as rejected with 429).
    The proxy stops by itself after ``lifetime`` seconds or ``max_requests`` requests.
    """

    def __init__(self, upstream: str, lifetime: float = 120.0, max_requests: int = 2000):
        self.upstream = urlsplit(upstream)
        self.faults: list[tuple[str, list[str]]] = []
        self.injected: list[str] = []
        self.requests = 0
        self.max_requests = max_requests
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _any(self):
                proxy.handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(lifetime, self.stop)  # bounded: never outlives a stuck test
        self._timer.daemon = True
        self._timer.start()

    def plan(self, path_part: str, faults: list[str]) -> None:
        with self._lock:
            self.faults.append((path_part, list(faults)))

    def _next_fault(self, path: str):
        with self._lock:
            self.requests += 1
            if self.requests > self.max_requests:
                return "drop"
            for part, queue in self.faults:
                if part in path and queue:
                    fault = queue.pop(0)
                    self.injected.append(f"{fault} {path.split('?')[0]}")
                    return fault
        return None

    def handle(self, req) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else None
        fault = self._next_fault(req.path)
        if fault == "drop":
            req.close_connection = True
            req.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault and fault.isdigit():
            self._answer(req, int(fault), json.dumps({"error": {"type": "injected", "reason": f"injected {fault}"},
                                                      "status": int(fault)}).encode())
            return
        if fault and fault.startswith("delay:"):
            time.sleep(float(fault.split(":", 1)[1]))
        status, data = self._forward(req, body)
        if fault == "partial" and status == 200:
            data = _reject_first_item(data)
        self._answer(req, status, data)

    def _forward(self, req, body):
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        headers = {k: v for k, v in req.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(req.command, req.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, data

    @staticmethod
    def _answer(req, status: int, data: bytes) -> None:
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(data)

    def stop(self) -> None:
        self._timer.cancel()
        self.server.shutdown()
        self.server.server_close()


def _reject_first_item(data: bytes) -> bytes:
    """A _bulk answer whose first item is rejected (429), or a _msearch answer whose first query is."""
    answer = json.loads(data)
    rejected = {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "injected 429"}}
    if answer.get("items"):
        op = next(iter(answer["items"][0]))
        answer["items"][0][op].update(rejected)
        answer["errors"] = True
    elif answer.get("responses"):
        answer["responses"][0] = rejected
    return json.dumps(answer).encode()


@pytest.fixture
def fault_proxy(osmem_url):
    """A ``FaultProxy`` in front of the session's osmem-server, stopped after the test."""
    proxy = FaultProxy(osmem_url)
    try:
        yield proxy
    finally:
        proxy.stop()
