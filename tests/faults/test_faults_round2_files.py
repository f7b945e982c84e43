"""Round 2, files: bytes that are not UTF-8 are one error naming the file, line and byte offset
(evaluation, data preparation, ``python -m sparse.idf``), with nothing written; qrels naming absent
documents and empty documents are warned about with their counts; outputs that cannot be written
are one ``error:`` line naming the path."""

from __future__ import annotations

import logging
import os
import re
import shutil

import pytest


EVAL = ["--model_name_or_path", "{model}", "--beir_dir", "{beir}", "--beir_datasets", "tinyset",
        "--output_dir", "{out}"]
KD = ["--model_name_or_path", "{model}", "--data_dir", "{beir}/tinyset", "--split", "test", "--output", "{out}",
      "--teachers", "bm25"]


def _damaged_beir(src_beir: str, dst, part: str, line: int) -> tuple[str, int]:
    """A copy of the BEIR root with byte 0xff put into ``line`` (from 1) of ``part``; returns (root, offset)."""
    shutil.copytree(src_beir, dst)
    path = os.path.join(dst, "tinyset", part)
    with open(path, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    offset = sum(len(x) for x in lines[:line - 1]) + 3
    lines[line - 1] = lines[line - 1][:3] + b"\xff" + lines[line - 1][3:]
    with open(path, "wb") as f:
        f.write(b"".join(lines))
    return str(dst), offset


@pytest.mark.parametrize("entry,part,line", [
    ("evaluate_beir", "corpus.jsonl", 3), ("evaluate_beir", "queries.jsonl", 2),
    ("evaluate_beir", "qrels/test.tsv", 4), ("data_preparation", "corpus.jsonl", 5),
    ("data_preparation", "queries.jsonl", 1)])
def test_bytes_not_utf8_named_with_line_and_offset(entry, part, line, cli, faults_env, tmp_path, monkeypatch):
    beir, offset = _damaged_beir(faults_env["beir_dir"], tmp_path / "beir", part, line)
    monkeypatch.chdir(tmp_path)
    before = set(os.listdir(tmp_path))
    args = [a.format(model=faults_env["model"], beir=beir, out=str(tmp_path / "out")) for a in
            (EVAL if entry == "evaluate_beir" else KD)]
    code, out, err = cli(entry, *args)
    message = [m for m in err.splitlines() if m.startswith("error: ")]
    assert code == 2 and len(message) == 1, err[-3000:]
    want = rf"{re.escape(part)}: line {line} is not UTF-8 \(byte offset {offset}: 0xff\)"
    assert re.search(want, message[0]), message[0]
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists() and set(os.listdir(tmp_path)) == before


def _idf_cli(capsys, *argv):
    from sparse.idf import main

    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, [m for m in err.splitlines() if m.startswith(("error:", "Traceback"))]


def test_idf_command_bytes_not_utf8(faults_env, tmp_path, capsys):
    corpus = tmp_path / "texts.txt"
    corpus.write_bytes(b"the cat sat\nthe dog \xe9 sat\n")
    code, _, err = _idf_cli(capsys, "--tokenizer", faults_env["model"], "--corpus", str(corpus),
                            "--output", str(tmp_path / "idf.json"))
    assert code == 2 and len(err) == 1, err
    assert re.search(r"texts\.txt: line 2 is not UTF-8 \(byte offset 20: 0xe9\)", err[0]), err
    assert not (tmp_path / "idf.json").exists()


@pytest.mark.parametrize("case", ["under-a-file", "is-a-folder"])
def test_idf_command_output_cannot_be_written(case, faults_env, tmp_path, capsys):
    corpus = tmp_path / "texts.txt"
    corpus.write_text("the cat sat\nthe dog sat\n")
    (tmp_path / "afile").write_text("keep")
    (tmp_path / "afolder").mkdir()
    output = tmp_path / "afile" / "idf.json" if case == "under-a-file" else tmp_path / "afolder"
    code, _, err = _idf_cli(capsys, "--tokenizer", faults_env["model"], "--corpus", str(corpus),
                            "--output", str(output))
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and str(output) in err[0], err
    assert (tmp_path / "afile").read_text() == "keep"


def test_qrels_absent_from_corpus_and_empty_documents_are_counted(faults_env, tmp_path, caplog, beir_writer):
    from sparse.data.beir import load_beir

    corpus = {"d1": {"title": "", "text": "the cat"}, "d2": {"title": "", "text": ""},
              "d3": {"title": "", "text": "  "}, "d4": {"title": "a dog", "text": ""}}
    queries = {"q1": "cat", "q2": "dog"}
    qrels = {"q1": {"d1": 1, "gone1": 1}, "q2": {"gone2": 1, "gone3": 2}}
    beir_writer(tmp_path / "set", corpus, queries, qrels, split="test")
    with caplog.at_level(logging.WARNING, logger="sparse.data.beir"):
        load_beir(str(tmp_path / "set"), "test")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert re.search(r"3 of 4 qrels \(test split, 2 queries\) name documents that are not in the corpus", text), text
    assert re.search(r"2 of 4 documents are empty", text), text


def test_evaluation_warns_about_absent_qrels_documents(cli, faults_env, tmp_path, beir_writer):
    corpus = {f"d{i}": {"title": "", "text": t} for i, t in enumerate(["the cat sat", "a dog flew", "red house"])}
    beir_writer(tmp_path / "beir" / "gapset", corpus, {"q0": "cat", "q1": "dog"},
                {"q0": {"d0": 1, "missing-doc": 1}, "q1": {"d1": 1}}, split="test")
    code, out, err = cli("evaluate_beir", "--model_name_or_path", faults_env["model"], "--beir_dir",
                         str(tmp_path / "beir"), "--beir_datasets", "gapset", "--output_dir", str(tmp_path / "out"))
    assert code == 0, err[-2000:]
    assert "1 of 3 qrels (test split, 1 queries) name documents that are not in the corpus" in err + out
    log = (tmp_path / "out" / "beir_eval" / "eval_beir.log").read_text()
    assert "name documents that are not in the corpus" in log


MINE = ["--model_name_or_path", "{model}", "--beir_dir", "{beir}", "--beir_datasets", "tinyset", "--split", "test",
        "--output", "{out}"]
TRAIN = ["model_name_or_path={model}", "train_file={posnegs}", "data_type=posnegs", "loss_types=[infonce]",
         "output_dir={out}", "max_steps=1", "report_to=none", "max_seq_length=16"]


@pytest.mark.parametrize("entry", ["train_ir", "evaluate_beir", "data_preparation", "demo_train_data"])
@pytest.mark.parametrize("case", ["output-is-a-file", "parent-is-a-file", "read-only-parent"])
def test_output_folder_that_cannot_be_written(entry, case, cli, faults_env, tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("keep")
    locked = tmp_path / "locked"
    locked.mkdir()
    out = {"output-is-a-file": tmp_path / "afile", "parent-is-a-file": tmp_path / "afile" / "run",
           "read-only-parent": locked / "run"}[case]
    if case == "read-only-parent":  # root ignores permission bits: a read-only folder is simulated
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if str(p) == str(locked)
                            else real_access(p, mode, *a, **k))
    values = {"model": faults_env["model"], "posnegs": faults_env["posnegs"], "beir": faults_env["beir_dir"],
              "out": str(out)}
    argv = {"train_ir": TRAIN, "evaluate_beir": EVAL, "data_preparation": KD, "demo_train_data": MINE}[entry]
    code, _, err = cli(entry, *[a.format(**values) for a in argv])
    message = [m for m in err.splitlines() if m.startswith("error: ")]
    assert code == 2 and len(message) == 1 and "Traceback" not in err, err[-3000:]
    assert "output" in message[0] and (str(out) in message[0] or str(out.parent) in message[0]), message[0]
    assert (tmp_path / "afile").read_text() == "keep" and os.listdir(locked) == []


def test_disk_full_writing_evaluation_results(cli, faults_env, tmp_path, monkeypatch):
    import errno

    from sparse.evaluation import beir_eval

    def full(path, run):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(beir_eval, "write_trec_run", full)
    out = tmp_path / "out"
    code, _, err = cli("evaluate_beir", *[a.format(model=faults_env["model"], beir=faults_env["beir_dir"], out=out)
                                          for a in EVAL])
    message = [m for m in err.splitlines() if m.startswith("error: ")]
    assert code == 2 and len(message) == 1 and "Traceback" not in err, err[-3000:]
    assert "tinyset.trec failed: No space left on device" in message[0]


@pytest.mark.parametrize("reader", ["bm25-teacher-collection", "prescored-texts", "msmarco-tsv"])
def test_other_readers_name_bytes_not_utf8(reader, tmp_path):
    from sparse.errors import UserError

    if reader == "msmarco-tsv":
        path = tmp_path / "collection.tsv"
        path.write_bytes(b"d1\tthe cat\nd2\tthe \xff dog\n")
        want = r"collection\.tsv: line 2 is not UTF-8 \(byte offset 18: 0xff\)"
    else:
        path = tmp_path / "corpus.jsonl"
        path.write_bytes(b'{"_id": "d1", "text": "the cat"}\n{"_id": "d2", "text": "the \xff dog"}\n')
        want = r"corpus\.jsonl: line 2 is not UTF-8 \(byte offset 60: 0xff\)"
        (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "cat"}\n')
    with pytest.raises(UserError, match=want):
        if reader == "bm25-teacher-collection":
            from sparse.teachers.bm25 import read_collection

            read_collection(str(path))
        elif reader == "prescored-texts":
            from sparse.datagen.prescored import text_tables

            text_tables(str(tmp_path), "train")
        else:
            from sparse.datagen.sources import read_id_text_tsv

            read_id_text_tsv(str(path))


def test_export_sample_corpus_not_utf8(faults_env, tmp_path, capsys):
    from sparse.export.command import main

    sample = tmp_path / "sample.txt"
    sample.write_bytes(b"the cat sat\nthe \xff dog\n")
    out = tmp_path / "export"
    try:
        main([faults_env["model"], "--to", "opensearch", "--output", str(out), "--sample_corpus", str(sample),
              "--no_onnx"])
        code = 0
    except SystemExit as exc:
        code = exc.code
    err = [m for m in capsys.readouterr().err.splitlines() if m.startswith(("error:", "Traceback"))]
    assert code == 2 and len(err) == 1 and "sample.txt: line 2 is not UTF-8 (byte offset 16: 0xff)" in err[0], err
    assert not out.exists()


def test_train_file_not_utf8(cli, faults_env, tmp_path):
    data = tmp_path / "rows.jsonl"
    good = open(faults_env["posnegs"], "rb").read().splitlines(keepends=True)
    offset = sum(len(x) for x in good[:2]) + 12
    data.write_bytes(b"".join(good[:2]) + good[2][:12] + b"\xe9" + good[2][12:] + b"".join(good[3:]))
    out = tmp_path / "run"
    code, _, err = cli("train_ir", *[a.format(model=faults_env["model"], posnegs=str(data), out=str(out))
                                     for a in TRAIN])
    message = [m for m in err.splitlines() if m.startswith("error: ")]
    assert code == 2 and len(message) == 1, err[-2000:]
    assert f"rows.jsonl: line 3 is not UTF-8 (byte offset {offset}: 0xe9)" in message[0]
    assert not out.exists()


def test_idf_file_not_utf8(cli, faults_env, tmp_path):
    idf = tmp_path / "idf.json"
    idf.write_bytes(b'{"cat": 1.5, "\xff": 2.0}')
    out = tmp_path / "run"
    args = [a.format(model=faults_env["model"], posnegs=faults_env["posnegs"], out=str(out)) for a in TRAIN]
    code, _, err = cli("train_ir", *args, f"idf_path={idf}")
    message = [m for m in err.splitlines() if m.startswith("error: ")]
    assert code == 2 and len(message) == 1 and "Traceback" not in err, err[-2000:]
    assert "idf.json is not valid JSON" in message[0] and "0xff" in message[0]
    assert not out.exists()


def _tree(path) -> dict:
    return {os.path.relpath(os.path.join(r, n), path): os.path.getsize(os.path.join(r, n))
            for r, _, names in os.walk(path) for n in names}


@pytest.mark.parametrize("case", ["mine-into-the-dataset", "mine-into-beir-root", "mine-into-a-foreign-folder",
                                  "kd-into-data-dir", "kd-into-the-model"])
def test_data_generation_never_replaces_its_input_or_a_foreign_folder(case, cli, faults_env, tmp_path):
    beir = tmp_path / "beir"
    shutil.copytree(faults_env["beir_dir"], beir)
    model = tmp_path / "model"
    shutil.copytree(faults_env["model"], model)
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("precious")
    out = {"mine-into-the-dataset": beir / "tinyset", "mine-into-beir-root": beir,
           "mine-into-a-foreign-folder": foreign, "kd-into-data-dir": beir / "tinyset", "kd-into-the-model": model}[case]
    argv = MINE if case.startswith("mine") else KD
    before = {p: _tree(p) for p in (beir, model, foreign)}
    code, _, err = cli("demo_train_data" if case.startswith("mine") else "data_preparation",
                       *[a.format(model=str(model), beir=str(beir), out=str(out)) for a in argv])
    message = [m for m in err.splitlines() if m.startswith("error: ")]
    assert code == 2 and len(message) == 1 and "Traceback" not in err, err[-2000:]
    assert message[0].startswith(f"error: output {out}"), message[0]
    assert {p: _tree(p) for p in (beir, model, foreign)} == before  # nothing removed or written


def test_training_into_the_model_folder_is_refused(cli, faults_env, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(faults_env["model"], model)
    before = _tree(model)
    code, _, err = cli("train_ir", *[a.format(model=str(model), posnegs=faults_env["posnegs"], out=str(model))
                                     for a in TRAIN])
    message = [m for m in err.splitlines() if m.startswith("error: ")]
    assert code == 2 and len(message) == 1 and "is the model being trained" in message[0], err[-2000:]
    assert _tree(model) == before


def test_idf_output_is_the_corpus(faults_env, tmp_path, capsys):
    corpus = tmp_path / "texts.txt"
    corpus.write_text("the cat sat\nthe dog sat\n")
    code, _, err = _idf_cli(capsys, "--tokenizer", faults_env["model"], "--corpus", str(corpus),
                            "--output", str(corpus))
    assert code == 2 and len(err) == 1 and "is the corpus it reads" in err[0], err
    assert corpus.read_text() == "the cat sat\nthe dog sat\n"
