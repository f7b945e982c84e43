"""``OpenSearchIndex``: the ``Index`` protocol over an OpenSearch ``rank_features`` field.

Connection: URL, user, password, TLS verification and timeout come from the arguments or the
environment (``OPENSEARCH_URL`` / ``OS_URL``, ``OPENSEARCH_USER`` / ``OS_USERNAME``,
``OPENSEARCH_PASSWORD`` / ``OS_PASSWORD``, ``OPENSEARCH_VERIFY_CERTS``, ``OPENSEARCH_TIMEOUT``).
Credentials are never logged: messages show the URL without its user-info part.

Documents: ``{"id": <doc id>, "<field>": {feature: weight}}`` in an index whose mapping makes
``<field>`` a ``rank_features`` field and ``id`` a keyword. Lucene stores each weight with 9
significant bits (``sparse.retrieval.precision.fp9``) and rejects weights that are zero, negative
or below Float.MIN_NORMAL, so those are filtered (and counted in ``filtered_weights``).

Feature names: a token is a key of the ``rank_features`` object and the ``rank_feature`` query
addresses it as ``<field>.<token>``, so a dot inside a token (BERT has ``.``, ``...``, ``##.``)
would be read as an object path. ``feature_name`` therefore percent-escapes ``%`` as ``%25`` and
``.`` as ``%2E`` (every other character, ``#``, ``[`` and non-ASCII included, is kept); the same
names are used at query time, so an index built here is queried consistently.

Scores (both query forms equal ``sum_t w_q(t) * fp9(w_d(t))``):

* ``rank_feature`` (default): ``bool.should`` of ``rank_feature`` clauses, ``linear`` with
  ``boost = w_q``. Works on any OpenSearch (and osmem-server); no cap on query weights.
* ``neural_sparse``: ``{"neural_sparse": {field: {"query_tokens": {tok: w}}}}`` (neural-search
  plugin, 2.14+). Lucene's ``FeatureField.newLinearQuery`` needs every weight in (0, 64].
  Optional two-phase search pipeline (``neural_sparse_two_phase_processor``, 2.15+), set as the
  index's default search pipeline.

Ingest goes in ``_bulk`` chunks with retries and exponential backoff (429/5xx and transport
errors, ``max_retries`` times, waits ``backoff * 2**attempt`` seconds); afterwards the indexed count
must equal the number of documents added, otherwise a ``UserError`` lists the failed ids and
reasons. Searches (``_msearch``) retry the same way, the whole request and each rejected query;
when retries run out the error says how many documents or queries failed. Nothing is dropped
silently and no run is scored on missing results.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Optional, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from tqdm.auto import tqdm

from sparse.errors import UserError
from sparse.modeling.vectors import SparseBatch
from sparse.retrieval.base import SearchResult, check_k, prune_queries, rank_hits
from sparse.retrieval.precision import LUCENE_MIN_NORMAL

logger = logging.getLogger(__name__)

QUERY_FORMS = ("rank_feature", "neural_sparse")
NEURAL_SPARSE_MAX_WEIGHT = 64.0
MAX_CLAUSES = 1024
PIPELINE_NAME = "sparse-two-phase"
DEFAULT_URL = "http://localhost:9200"


# --------------------------------------------------------------------------- names and bodies
def feature_name(token: str) -> str:
    """The ``rank_features`` key of a token: ``%`` -> ``%25`` then ``.`` -> ``%2E``."""
    if token == "":
        raise ValueError("an empty token cannot be a feature name")
    return token.replace("%", "%25").replace(".", "%2E")


def token_of_feature(name: str) -> str:
    """Inverse of ``feature_name``."""
    return name.replace("%2E", ".").replace("%25", "%")


def redact_url(url: str) -> str:
    """The URL without user-info (``https://user:pw@host`` -> ``https://host``)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]  # as written (an invalid port must not make this raise)
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def query_body(tokens: dict[str, float], k: int, field: str = "text_sparse", form: str = "rank_feature",
               id_field: str = "id") -> dict:
    """The ``_search`` body of one query; ``tokens`` maps feature names to query weights."""
    if form == "rank_feature":
        query = {"bool": {"should": [
            {"rank_feature": {"field": f"{field}.{name}", "linear": {}, "boost": float(w)}}
            for name, w in tokens.items()]}}
    elif form == "neural_sparse":
        bad = {n: w for n, w in tokens.items() if not 0 < w <= NEURAL_SPARSE_MAX_WEIGHT}
        if bad:
            name, w = next(iter(bad.items()))
            raise UserError(f"neural_sparse query weights must be in (0, {NEURAL_SPARSE_MAX_WEIGHT:g}] "
                            f"(Lucene FeatureField); {len(bad)} are not, e.g. {name!r}={w:g}; use "
                            f"opensearch_query_form=rank_feature, which has no cap")
        query = {"neural_sparse": {field: {"query_tokens": {n: float(w) for n, w in tokens.items()}}}}
    else:
        raise UserError(f"opensearch query form must be one of {QUERY_FORMS}, got {form!r}")
    return {"size": int(k), "query": query, "_source": False, "track_scores": True,
            "sort": [{"_score": {"order": "desc"}}, {id_field: {"order": "asc"}}]}


def two_phase_pipeline(prune_ratio: float = 0.4, expansion_rate: float = 5.0,
                       max_window_size: int = 10000) -> dict:
    """Body of a search pipeline with the ``neural_sparse_two_phase_processor`` (defaults = OpenSearch's)."""
    return {"request_processors": [{"neural_sparse_two_phase_processor": {
        "tag": "neural-sparse", "description": "two-phase neural sparse search", "enabled": True,
        "two_phase_parameter": {"prune_ratio": prune_ratio, "expansion_rate": expansion_rate,
                                "max_window_size": max_window_size}}}]}


def _env(*names: str) -> Optional[str]:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _as_bool(value, default: bool, name: str = "OPENSEARCH_VERIFY_CERTS") -> bool:
    """A yes/no setting; an unknown word is an error (``ture`` must not quietly turn TLS checks off)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise UserError(f"{name}={value!r} is not a yes/no value: use one of {', '.join(_TRUE + _FALSE)}")


def connection_settings(url: Optional[str] = None, user: Optional[str] = None, password: Optional[str] = None,
                        verify_certs: Optional[bool] = None, timeout: Optional[float] = None) -> dict:
    """Resolved connection settings: arguments first, then the environment, then defaults.

    One rule for credentials everywhere (evaluation, mining, ``--register``): never in the URL (it
    would end up in logs, resolved configs and shell history); they come from the arguments or from
    ``OPENSEARCH_USER`` / ``OPENSEARCH_PASSWORD``."""
    url = url or _env("OPENSEARCH_URL", "OS_URL") or DEFAULT_URL
    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:  # a port that is not a number, or out of range
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise UserError(f"OpenSearch URL must look like http(s)://host:port (port 1-65535), got {redact_url(url)!r}")
    if parts.username or parts.password:
        raise UserError(f"the OpenSearch URL {redact_url(url)} must not hold credentials (user:password@): set "
                        f"OPENSEARCH_USER and OPENSEARCH_PASSWORD in the environment instead")
    user = user or _env("OPENSEARCH_USER", "OPENSEARCH_USERNAME", "OS_USERNAME")
    password = password or _env("OPENSEARCH_PASSWORD", "OS_PASSWORD")
    if bool(user) != bool(password):
        raise UserError("OpenSearch credentials need both a user and a password "
                        "(OPENSEARCH_USER and OPENSEARCH_PASSWORD)")
    verify = _as_bool(verify_certs if verify_certs is not None else _env("OPENSEARCH_VERIFY_CERTS"), True)
    timeout = float(timeout if timeout is not None else (_env("OPENSEARCH_TIMEOUT") or 60))
    return {"url": redact_url(url), "user": user, "password": password, "verify_certs": verify,
            "timeout": timeout, "use_ssl": parts.scheme == "https"}


_WARNED_INSECURE: set = set()


def warn_if_insecure(conn: dict) -> None:
    """One warning per cluster and process when TLS certificate verification is off; urllib3's own
    warning on every request is then silenced (it would repeat this one thousands of times)."""
    if conn["verify_certs"] or conn["url"] in _WARNED_INSECURE:
        return
    _WARNED_INSECURE.add(conn["url"])
    logger.warning("TLS certificate verification is OFF for %s (--insecure, opensearch_verify_certs=false or "
                   "OPENSEARCH_VERIFY_CERTS=false): the server's identity is not checked", conn["url"])


# --------------------------------------------------------------------------- the index
def open_client(conn: dict, **options):
    """An opensearch-py client for resolved ``connection_settings``: its URL, timeout, TLS check and
    credentials; ``options`` (e.g. ``max_retries``) go to the client, which retries nothing by default."""
    from opensearchpy import OpenSearch

    warn_if_insecure(conn)  # said once here, so urllib3's per-request repeat of it is switched off below
    kwargs = dict(hosts=[conn["url"]], timeout=conn["timeout"], max_retries=0, verify_certs=conn["verify_certs"],
                  ssl_show_warn=conn["verify_certs"], ssl_assert_hostname=conn["verify_certs"] and None)
    kwargs.update(options)
    if conn["user"]:
        kwargs["http_auth"] = (conn["user"], conn["password"])
    return OpenSearch(**kwargs)


class OpenSearchIndex:
    """The ``Index`` protocol over a ``rank_features`` index of an OpenSearch cluster (see the module docstring)."""

    persistent = True  # a named index on the cluster, reusable with skip_ingest
    needs_token_names = True  # rank_features are keyed by token strings

    def __init__(self, index_name: str, id_to_token: Sequence[str], url: Optional[str] = None,
                 user: Optional[str] = None, password: Optional[str] = None,
                 verify_certs: Optional[bool] = None, timeout: Optional[float] = None,
                 query_form: str = "rank_feature", field: str = "text_sparse", two_phase: bool = False,
                 two_phase_params: Optional[dict] = None, bulk_size: int = 500, max_retries: int = 5,
                 backoff: float = 1.0, skip_ingest: bool = False, delete_on_close: bool = False,
                 shards: int = 1, replicas: int = 0, query_prune: float = 0.0, search_batch: int = 50,
                 max_clauses: int = MAX_CLAUSES, progress: bool = False, client: Any = None):
        if query_form not in QUERY_FORMS:
            raise UserError(f"opensearch query form must be one of {QUERY_FORMS}, got {query_form!r}")
        if two_phase and query_form != "neural_sparse":
            raise UserError("use_two_phase needs opensearch_query_form=neural_sparse: the two-phase "
                            "processor only rewrites neural_sparse queries")
        self.index_name = index_name
        self.field = field
        self.query_form = query_form
        self.two_phase = two_phase
        self.two_phase_params = two_phase_params or {}
        self.bulk_size = int(bulk_size)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.skip_ingest = skip_ingest
        self.delete_on_close = delete_on_close
        self.shards, self.replicas = int(shards), int(replicas)
        self.query_prune = float(query_prune)
        self.search_batch = int(search_batch)
        self.max_clauses = int(max_clauses)
        self.progress = progress
        self._names = [feature_name(t) if t else f"[id_{i}]" for i, t in enumerate(id_to_token)]
        self._n = 0
        self._created = False
        self.filtered_weights = 0
        self._conn = connection_settings(url, user, password, verify_certs, timeout)
        self.url = self._conn["url"]
        self.client = client or self._connect()
        if two_phase:
            self._setup_two_phase()

    # ------------------------------------------------------------------ connection
    def _connect(self):
        client = open_client(self._conn)  # retries are this class's own (``_send_with_retries``)
        self._call(client.info, what="connect")
        return client

    def _call(self, fn, *args, what: str, **kwargs):
        """Run a client call with retries on transport errors, 429 and 5xx; others become UserError."""
        from opensearchpy import exceptions as ex

        for attempt in range(self.max_retries + 1):
            try:
                return fn(*args, **kwargs)
            except (ex.ConnectionError, ex.ConnectionTimeout) as exc:
                err = f"cannot reach OpenSearch at {self.url} ({type(exc).__name__})"
                retry = True
            except ex.TransportError as exc:
                status = exc.status_code if isinstance(exc.status_code, int) else 0
                err = f"OpenSearch {what} failed with {status}: {_reason(exc)}"
                retry = status == 429 or status >= 500
            if not retry or attempt == self.max_retries:
                raise UserError(err) from None
            wait = self.backoff * 2 ** attempt
            logger.warning("%s; retrying in %.1fs (%d/%d)", err, wait, attempt + 1, self.max_retries)
            time.sleep(wait)

    def _setup_two_phase(self) -> None:
        body = two_phase_pipeline(**self.two_phase_params)
        self._call(self.client.transport.perform_request, "PUT", f"/_search/pipeline/{PIPELINE_NAME}",
                   body=body, what="two-phase pipeline creation (needs OpenSearch >= 2.15 with neural-search)")

    # ------------------------------------------------------------------ index management
    def exists(self) -> bool:
        return bool(self._call(self.client.indices.exists, index=self.index_name, what="index lookup"))

    def count(self) -> int:
        self._call(self.client.indices.refresh, index=self.index_name, what="refresh")
        return int(self._call(self.client.count, index=self.index_name, what="count")["count"])

    def _create(self) -> None:
        if self.exists():
            logger.info("deleting existing index %s", self.index_name)
            self._call(self.client.indices.delete, index=self.index_name, what="index deletion")
        settings = {"number_of_shards": self.shards, "number_of_replicas": self.replicas}
        if self.two_phase:
            settings["index.search.default_pipeline"] = PIPELINE_NAME
        body = {"settings": settings,
                "mappings": {"properties": {self.field: {"type": "rank_features"}, "id": {"type": "keyword"}}}}
        self._call(self.client.indices.create, index=self.index_name, body=body, what="index creation")
        self._created = True

    def verify_count(self, expected: int) -> None:
        """For ``skip_ingest``: the existing index must hold exactly ``expected`` documents."""
        if not self.exists():
            raise UserError(f"skip_ingest is set but index {self.index_name} does not exist at {self.url}; "
                            f"run once without skip_ingest")
        have = self.count()
        if have != expected:
            raise UserError(f"index {self.index_name} holds {have} documents, the corpus {expected}; "
                            f"re-ingest (skip_ingest=false)")
        self._n = have

    # ------------------------------------------------------------------ ingest
    def _source(self, doc_id: str, ids: np.ndarray, vals: np.ndarray) -> dict:
        ok = np.isfinite(vals) & (vals >= LUCENE_MIN_NORMAL)
        self.filtered_weights += int((~ok).sum())
        return {"id": doc_id, self.field: {self._names[t]: float(w) for t, w in zip(ids[ok].tolist(), vals[ok].tolist())}}

    def add(self, ids: list[str], vectors: SparseBatch) -> None:
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if vectors.vocab_size > len(self._names):
            raise ValueError(f"vectors over {vectors.vocab_size} tokens, but only {len(self._names)} token names")
        if len(set(map(str, ids))) != len(ids):
            raise UserError("duplicate document ids in one add() call")
        if not self._created:
            self._create()
        failed: dict[str, str] = {}
        bar = tqdm(total=len(ids), desc=f"ingest {self.index_name}", unit="doc", disable=not self.progress)
        for start in range(0, len(ids), self.bulk_size):
            chunk = {}
            for i in range(start, min(start + self.bulk_size, len(ids))):
                tok, val = vectors.row(i)
                chunk[str(ids[i])] = self._source(str(ids[i]), tok, val)
            try:
                failed.update(self._bulk(chunk))
            except UserError as exc:
                bar.close()
                raise UserError(f"{exc}; ingest stopped with {len(ids) - start} of {len(ids)} documents not sent "
                                f"(and {len(failed)} rejected): index {self.index_name} is incomplete and will be "
                                "rebuilt by the next run (skip_ingest=false)") from None
            bar.update(len(chunk))
        bar.close()
        self._n += len(ids)
        have = self.count()
        if failed or have != self._n:
            sample = "; ".join(f"{d}: {r}" for d, r in list(failed.items())[:10])
            raise UserError(f"index {self.index_name} holds {have} of {self._n} documents; "
                            f"{len(failed)} failed to index" + (f" ({sample})" if sample else ""))
        if self.filtered_weights:
            logger.info("%d weights below Float.MIN_NORMAL (zero, negative or subnormal) were not indexed",
                        self.filtered_weights)

    def _send_with_retries(self, pending: dict, send, what: str) -> tuple[dict, dict]:
        """Send ``pending`` ({key: item}) through ``send(pending)``, which yields (key, status, response)
        per item; items rejected with 429/5xx go again after an exponential backoff, up to
        ``max_retries`` times. Returns ({key: response} answered, {key: reason} of the failures)."""
        answered, failed = {}, {}
        for attempt in range(self.max_retries + 1):
            retry = {}
            for key, status, res in send(pending):
                if status < 300:
                    answered[key] = res
                elif (status == 429 or status >= 500) and attempt < self.max_retries:
                    retry[key] = pending[key]
                else:
                    failed[key] = f"{status} {_item_reason(res)}"
            if not retry:
                break
            wait = self.backoff * 2 ** attempt
            logger.warning("%d %s rejected (429/5xx); retrying in %.1fs", len(retry), what, wait)
            time.sleep(wait)
            pending = retry
        return answered, failed

    def _bulk(self, docs: dict[str, dict]) -> dict[str, str]:
        """Send one chunk; retry rejected (429/5xx) items; return {doc id: reason} of permanent failures."""
        def send(pending):
            body = [line for doc_id, source in pending.items()
                    for line in ({"index": {"_index": self.index_name, "_id": doc_id}}, source)]
            for item in self._call(self.client.bulk, body=body, what="bulk ingest").get("items", []):
                res = next(iter(item.values()))
                yield str(res.get("_id")), int(res.get("status", 500)), res

        return self._send_with_retries(dict(docs), send, "documents")[1]

    # ------------------------------------------------------------------ search
    def _tokens(self, ids: np.ndarray, vals: np.ndarray) -> dict[str, float]:
        return {self._names[t]: float(w) for t, w in zip(ids.tolist(), vals.tolist()) if w > 0}

    def search(self, queries: SparseBatch, k: int) -> SearchResult:
        k = check_k(k)
        queries = prune_queries(queries, self.query_prune)
        out_ids: list[list[str]] = [[] for _ in range(len(queries))]
        out_scores: list[list[float]] = [[] for _ in range(len(queries))]
        bodies = []
        for qi in range(len(queries)):
            tokens = self._tokens(*queries.row(qi))
            if not tokens:
                continue  # a query without tokens matches nothing
            if len(tokens) > self.max_clauses and self.query_form == "rank_feature":
                raise UserError(f"query {qi} has {len(tokens)} tokens, more than the {self.max_clauses} "
                                f"boolean clauses OpenSearch allows; set query_prune or raise max_clauses")
            bodies.append((qi, query_body(tokens, k, self.field, self.query_form)))
        bar = tqdm(total=len(bodies), desc=f"search {self.index_name}", unit="q", disable=not self.progress)
        for start in range(0, len(bodies), self.search_batch):
            batch = bodies[start:start + self.search_batch]
            try:
                answered, failed = self._msearch(dict(batch))
            except UserError as exc:
                bar.close()
                raise UserError(f"{exc}; {len(bodies) - start} of {len(bodies)} queries were not searched, so no "
                                "results are scored") from None
            if failed:
                bar.close()
                qi, reason = next(iter(failed.items()))
                raise UserError(f"OpenSearch search failed for {len(failed)} of {len(bodies)} queries after "
                                f"{self.max_retries} retries (e.g. query {qi}: {reason}); no results are scored")
            for qi, r in sorted(answered.items()):
                hits = r["hits"]["hits"]
                ids = [str(h.get("_id")) for h in hits]
                scores = [float(h["_score"]) if h.get("_score") is not None else float(h["sort"][0]) for h in hits]
                out_ids[qi], out_scores[qi] = rank_hits(ids, scores, k)
            bar.update(len(batch))
        bar.close()
        return out_ids, out_scores

    def _msearch(self, bodies: dict[int, dict]) -> tuple[dict[int, dict], dict[int, str]]:
        """One ``_msearch`` of {query index: body}; queries rejected with 429/5xx are sent again.
        Returns ({query index: response}, {query index: reason} of the queries that failed)."""
        def send(pending):
            payload = [line for body in pending.values() for line in ({"index": self.index_name}, body)]
            responses = self._call(self.client.msearch, body=payload, what="search").get("responses", [])
            if len(responses) != len(pending):
                raise UserError(f"OpenSearch answered {len(responses)} of {len(pending)} searches")
            for qi, r in zip(pending, responses):
                yield qi, (int(r.get("status", 500)) if "error" in r else 200), r

        return self._send_with_retries(dict(bodies), send, "searches")

    # ------------------------------------------------------------------ rest of the protocol
    def __len__(self) -> int:
        return self._n

    def size_bytes(self) -> Optional[int]:
        try:
            stats = self.client.indices.stats(index=self.index_name, metric="store")
            return int(stats["_all"]["primaries"]["store"]["size_in_bytes"])
        except Exception:  # noqa: BLE001  (optional figure; some servers lack _stats)
            return None

    def delete(self) -> None:
        if self.exists():
            self._call(self.client.indices.delete, index=self.index_name, what="index deletion")

    def close(self) -> None:
        try:
            if self.delete_on_close:
                self.delete()
        finally:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001
                pass


def _reason(exc) -> str:
    info = getattr(exc, "info", None)
    if isinstance(info, dict):
        return _item_reason(info)
    return str(getattr(exc, "error", exc))[:300]


def _item_reason(res: dict) -> str:
    err = res.get("error")
    if isinstance(err, dict):
        root = (err.get("root_cause") or [{}])[0]
        reason = err.get("reason") or root.get("reason") or ""
        caused = err.get("caused_by", {}).get("reason") if isinstance(err.get("caused_by"), dict) else None
        text = f"{err.get('type', '')}: {reason}" + (f" ({caused})" if caused else "")
        return text[:300]
    return str(err)[:300]
