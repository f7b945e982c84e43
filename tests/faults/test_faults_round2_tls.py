"""Round 2, OpenSearch connections: TLS verification is never turned off by a typo, turning it off
says so once, credentials never travel in URLs (one rule: evaluation and ``--register`` alike), and
``--register`` to a dead port or an invalid port is one line."""

from __future__ import annotations

import logging
import socket

import pytest

from sparse.errors import UserError
from sparse.retrieval import opensearch
from sparse.retrieval.opensearch import connection_settings, open_client


@pytest.mark.parametrize("word", ["ture", "flase", "maybe", "2"])
def test_unknown_verify_certs_word_is_an_error(word, monkeypatch):
    monkeypatch.setenv("OPENSEARCH_VERIFY_CERTS", word)
    with pytest.raises(UserError, match=rf"OPENSEARCH_VERIFY_CERTS='{word}' is not a yes/no value"):
        connection_settings("https://127.0.0.1:9200")


@pytest.mark.parametrize("word,want", [("false", False), ("0", False), ("No", False), ("true", True), ("on", True)])
def test_known_verify_certs_words(word, want, monkeypatch):
    monkeypatch.setenv("OPENSEARCH_VERIFY_CERTS", word)
    assert connection_settings("https://127.0.0.1:9200")["verify_certs"] is want


def test_verification_off_warns_once_and_not_silently(monkeypatch, caplog):
    monkeypatch.setattr(opensearch, "_WARNED_INSECURE", set())
    monkeypatch.setenv("OPENSEARCH_VERIFY_CERTS", "false")
    conn = connection_settings("https://127.0.0.1:9201")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            open_client(conn)
    warnings = [r for r in caplog.records if "verification is OFF" in r.getMessage()]
    assert len(warnings) == 1 and "127.0.0.1:9201" in warnings[0].getMessage()
    monkeypatch.setenv("OPENSEARCH_VERIFY_CERTS", "true")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        open_client(connection_settings("https://127.0.0.1:9202"))
    assert not [r for r in caplog.records if "verification is OFF" in r.getMessage()]


def test_insecure_register_warns_once(monkeypatch, tmp_path, cli, caplog):
    monkeypatch.setattr(opensearch, "_WARNED_INSECURE", set())
    port = _dead_port()
    (tmp_path / "manifest.json").write_text('{"name": "m", "version": "1", "models": {}}')
    with caplog.at_level(logging.WARNING):
        code, _, err = cli("export", "--register", f"https://127.0.0.1:{port}", "--output", str(tmp_path),
                               "--insecure")
    assert code == 2
    assert len([r for r in caplog.records if "verification is OFF" in r.getMessage()]) == 1


def test_register_refuses_credentials_in_url(tmp_path, cli):
    code, _, err = cli("export", "--register", "http://bob:hunter2@127.0.0.1:9200", "--output", str(tmp_path))
    assert code == 2 and "must not hold credentials" in err and "OPENSEARCH_USER" in err, err
    assert "hunter2" not in err


def test_credentials_in_url_refused_by_the_connection_rule():
    with pytest.raises(UserError, match="must not hold credentials") as err:
        connection_settings("https://bob:hunter2@127.0.0.1:9200")
    assert "hunter2" not in str(err.value)


def test_register_unknown_verify_word_before_export(tmp_path, cli, monkeypatch, faults_env):
    monkeypatch.setenv("OPENSEARCH_VERIFY_CERTS", "ture")
    out = tmp_path / "out"
    code, _, err = cli("export", faults_env["model"], "--to", "opensearch", "--output", str(out),
                           "--register", "https://127.0.0.1:9200")
    assert code == 2 and "is not a yes/no value" in err, err
    assert not out.exists()  # refused before anything was written


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_register_to_dead_port_is_one_line(tmp_path, cli):
    (tmp_path / "manifest.json").write_text('{"name": "m", "version": "1", "models": {}}')
    port = _dead_port()
    code, out, err = cli("export", "--register", f"http://127.0.0.1:{port}", "--output", str(tmp_path))
    assert code == 2, err
    assert "Traceback" not in err and f"cannot reach OpenSearch at http://127.0.0.1:{port}" in err, err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "http://127.0.0.1:port", "http://127.0.0.1:0"])
def test_register_invalid_port_is_a_usage_error(url, tmp_path, cli):
    code, _, err = cli("export", "--register", url, "--output", str(tmp_path))
    assert code == 2 and "port 1-65535" in err and "Traceback" not in err, err


def test_evaluation_unknown_verify_word_before_anything_is_written(cli, faults_env, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENSEARCH_VERIFY_CERTS", "ture")
    out = tmp_path / "out"
    code, _, err = cli("evaluate_beir", "--model_name_or_path", faults_env["model"], "--beir_dir",
                       faults_env["beir_dir"], "--beir_datasets", "tinyset", "--output_dir", str(out),
                       "--engine", "opensearch", "--opensearch_url", f"https://127.0.0.1:{_dead_port()}")
    message = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(message) == 1, err[-2000:]
    assert "OPENSEARCH_VERIFY_CERTS='ture' is not a yes/no value" in message[0]
    assert not out.exists()


def test_evaluation_unreachable_cluster_before_anything_is_written(cli, faults_env, tmp_path):
    out = tmp_path / "out"
    port = _dead_port()
    code, _, err = cli("evaluate_beir", "--model_name_or_path", faults_env["model"], "--beir_dir",
                       faults_env["beir_dir"], "--beir_datasets", "tinyset", "--output_dir", str(out),
                       "--engine", "opensearch", "--opensearch_url", f"http://127.0.0.1:{port}")
    message = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(message) == 1 and "Traceback" not in err, err[-2000:]
    assert f"cannot reach OpenSearch at http://127.0.0.1:{port}" in message[0]
    assert not out.exists()
