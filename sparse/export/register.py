"""``--register URL``: send an OpenSearch export to a cluster with opensearch-py, end to end.

Registers a model group, then each model by chunks (meta + 10 MB chunks: the cluster needs no
access to the files), waits until it is registered and deployed, creates the ingest pipeline and a
``rank_features`` index, ingests three documents through the pipeline, runs one ``neural_sparse``
query and returns the ids. Credentials come from the environment only (``OPENSEARCH_USER`` /
``OPENSEARCH_PASSWORD``); TLS certificates are verified unless ``verify_certs=False`` (None: ``OPENSEARCH_VERIFY_CERTS``, default on).
"""

from __future__ import annotations

import json
import logging
import os
import time

from sparse.errors import UserError, file_sha256, write_json
from sparse.export import packaging
from sparse.retrieval.opensearch import connection_settings, open_client

logger = logging.getLogger(__name__)

ROLES = ("document_encoder", "query_tokenizer")  # the TorchScript encoder and the tokenizer model
SAMPLE_DOCS = ["Vitamin D supplementation increases bone mineral density in older women.",
               "Interest rates rose as the central bank tried to slow inflation.",
               "The striker scored twice to win the championship."]


def _wait(check, what: str, timeout_s: float, poll_s: float):
    """Call ``check()`` until it returns a value (not None); a FAILED state or the deadline is an error."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise UserError(f"{what}: not done after {timeout_s:.0f} s")
        time.sleep(poll_s)


def _load_requests(out_dir: str) -> dict:
    path = os.path.join(out_dir, "manifest.json")
    if not os.path.isfile(path):
        raise UserError(f"{out_dir} holds no manifest.json: export with --to opensearch first")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _read_request(out_dir: str, name: str, ids: dict[str, str]) -> dict:
    with open(os.path.join(out_dir, "requests", name), encoding="utf-8") as f:
        text = f.read()
    for placeholder, value in ids.items():
        text = text.replace(placeholder, value)
    return json.loads(text)


def _register_model(client, out_dir: str, manifest: dict, role: str, group_id: str,
                    timeout_s: float, poll_s: float) -> str:
    model = manifest["models"][role]
    meta = _read_request(out_dir, f"register_{role}_meta.json", {})
    meta["model_group_id"] = group_id
    model_id = client.plugins.ml.register_model_meta(body=meta)["model_id"]
    zip_path = os.path.join(out_dir, model["zip"])
    if file_sha256(zip_path) != model["sha256"]:
        raise UserError(f"{zip_path} changed since the export (sha256 differs from manifest.json)")
    for chunk in model["chunks"]:
        body = packaging.read_chunk(zip_path, chunk["offset"], chunk["length"])
        client.plugins.ml.upload_chunk(model_id=model_id, chunk_number=str(chunk["number"]), body=body)

    def registered():
        state = client.transport.perform_request("GET", f"/_plugins/_ml/models/{model_id}").get("model_state")
        if state in ("REGISTER_FAILED", "DEPLOY_FAILED"):
            raise UserError(f"{role}: the cluster reports {state} for model {model_id}")
        return state if state in ("REGISTERED", "DEPLOYED") else None

    _wait(registered, f"registering {role}", timeout_s, poll_s)
    task_id = client.plugins.ml.deploy_model(model_id=model_id)["task_id"]

    def deployed():
        task = client.plugins.ml.get_task(task_id=task_id)
        if task.get("state") == "FAILED":
            raise UserError(f"deploying {role} failed: {task.get('error', task)}")
        return task if task.get("state") == "COMPLETED" else None

    _wait(deployed, f"deploying {role}", timeout_s, poll_s)
    logger.info("%s registered and deployed: model id %s", role, model_id)
    return model_id


def register(url: str, out_dir: str, verify_certs: bool | None = None, timeout: float = 60.0,
             wait_s: float = 900.0, poll_s: float = 2.0) -> dict:
    """Register, deploy and try the export in ``out_dir`` on the cluster at ``url``; return the ids.

    An unreachable cluster or a refused request is one ``UserError`` naming the URL (opensearch-py's
    own per-attempt warnings, each with a traceback, are kept out of the console)."""
    from opensearchpy import exceptions as ex

    conn = connection_settings(url, verify_certs=verify_certs, timeout=timeout)  # a bad URL: before any work
    manifest = _load_requests(out_dir)
    client_logger = logging.getLogger("opensearch")
    level = client_logger.level
    client_logger.setLevel(logging.ERROR)
    try:
        return _register(conn, out_dir, manifest, wait_s, poll_s)
    except (ex.ConnectionError, ex.ConnectionTimeout) as exc:
        raise UserError(f"cannot reach OpenSearch at {conn['url']} ({type(exc).__name__}): is the cluster "
                        f"running and the URL right?") from None
    except ex.TransportError as exc:
        status = exc.status_code if isinstance(exc.status_code, int) else "?"
        raise UserError(f"OpenSearch at {conn['url']} refused a request ({status}): {exc.error}") from None
    finally:
        client_logger.setLevel(level)


def _register(conn: dict, out_dir: str, manifest: dict, wait_s: float, poll_s: float) -> dict:
    client, shown_url = open_client(conn, max_retries=2, retry_on_timeout=True), conn["url"]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    group = client.plugins.ml.register_model_group(body={
        "name": f"{manifest['name']}-{manifest['version']}-{stamp}",
        "description": "models exported by sparse-retrieval-toolkit"})
    group_id = group["model_group_id"]
    model_ids = {role: _register_model(client, out_dir, manifest, role, group_id, wait_s, poll_s)
                 for role in ROLES if role in manifest["models"]}
    ids = {"<DOCUMENT_MODEL_ID>": model_ids["document_encoder"],
           "<QUERY_MODEL_ID>": model_ids.get("query_tokenizer", model_ids["document_encoder"])}
    client.ingest.put_pipeline(id=manifest["pipeline"], body=_read_request(out_dir, "ingest_pipeline.json", ids))
    index = f"{manifest['name']}-{stamp}".lower()
    client.indices.create(index=index, body=_read_request(out_dir, "index_rank_features.json", ids))
    for i, text in enumerate(SAMPLE_DOCS):
        client.index(index=index, id=str(i), body={manifest["text_field"]: text}, refresh=True)
    query = "query_doc_only_tokenizer.json" if manifest["inf_free"] else "query_bi_encoder.json"
    hits = client.search(index=index, body=_read_request(out_dir, query, ids))["hits"]["hits"]
    if not hits:
        raise UserError(f"the test query on {index} found nothing: check the ingest pipeline and models")
    result = {"cluster": shown_url, "model_group_id": group_id, "model_ids": model_ids, "index": index,
              "pipeline": manifest["pipeline"], "query": query, "top_hit": hits[0].get("_id")}
    write_json(os.path.join(out_dir, "registered.json"), result)
    return result
