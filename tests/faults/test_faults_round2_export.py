"""Round 2, export: no export may destroy its checkpoint or a folder it did not write.

An ``--output`` that is, holds or lies inside the checkpoint is refused (exit 2, nothing written or
removed); ``--overwrite`` replaces only a folder marked as an earlier export; file-system errors are
one ``error:`` line naming the path."""

from __future__ import annotations

import os
import shutil

import pytest
from sparse.export.command import EXPORT_MARKER

def _export(cli, *argv):
    code, out, err = cli("export", *argv)
    lines = [line for line in err.splitlines() if line.startswith(("error:", "Traceback"))]
    return code, out, "\n".join(lines)  # progress bars and log lines dropped


def _tree(path):
    """{relative path: (size, mtime)} of every file under ``path``."""
    found = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            st = os.stat(full)
            found[os.path.relpath(full, path)] = (st.st_size, st.st_mtime_ns)
    return found


@pytest.fixture
def run_dir(tmp_path, faults_env):
    """A training run with a checkpoint inside: RUN/ (with train.log) and RUN/checkpoint-1/."""
    run = tmp_path / "run"
    shutil.copytree(faults_env["model"], run / "checkpoint-1")
    shutil.copytree(faults_env["model"], run, dirs_exist_ok=True)
    (run / "train.log").write_text("a training log\n")
    return run


@pytest.mark.parametrize("case", ["same", "same-relative", "parent-of-source", "inside-source", "symlink-to-source"])
def test_output_overlapping_the_checkpoint_is_refused(case, run_dir, tmp_path, cli, monkeypatch):
    ckpt = run_dir / "checkpoint-1"
    source, output = str(ckpt), str(ckpt)
    if case == "same-relative":
        monkeypatch.chdir(run_dir)
        source, output = "checkpoint-1", "./checkpoint-1/../checkpoint-1"
    elif case == "parent-of-source":
        output = str(run_dir)
    elif case == "inside-source":
        output = str(ckpt / "export")
    elif case == "symlink-to-source":
        os.symlink(run_dir, tmp_path / "link")
        output = str(tmp_path / "link")
    before = _tree(run_dir)
    code, _, err = _export(cli, source, "--to", "sentence-transformers", "--output", output, "--overwrite")
    assert code == 2, err
    assert err.startswith("error: --output") and "checkpoint" in err and "Traceback" not in err, err
    assert _tree(run_dir) == before  # nothing removed, nothing written


def test_overwrite_only_replaces_an_earlier_export(faults_env, tmp_path, cli):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    code, _, err = _export(cli, faults_env["model"], "--to", "sentence-transformers", "--output", str(foreign),
                           "--overwrite")
    assert code == 2 and "not a folder this exporter wrote" in err, err
    assert (foreign / "notes.txt").read_text() == "precious"

    out = tmp_path / "export"
    code, _, err = _export(cli, faults_env["model"], "--to", "sentence-transformers", "--output", str(out))
    assert code == 0, err
    assert (out / EXPORT_MARKER).is_file() and (out / "modules.json").is_file()
    code, _, err = _export(cli, faults_env["model"], "--to", "sentence-transformers", "--output", str(out),
                           "--overwrite")
    assert code == 0, err
    assert (out / EXPORT_MARKER).is_file()


def test_output_that_is_a_file(faults_env, tmp_path, cli):
    target = tmp_path / "afile"
    target.write_text("keep")
    code, _, err = _export(cli, faults_env["model"], "--to", "sentence-transformers", "--output", str(target),
                           "--overwrite")
    assert code == 2 and "is a file" in err and str(target) in err, err
    assert target.read_text() == "keep"


def test_impossible_output_path(faults_env, tmp_path, cli):
    (tmp_path / "afile").write_text("keep")
    out = tmp_path / "afile" / "out"  # a folder under a file cannot be made
    code, _, err = _export(cli, faults_env["model"], "--to", "sentence-transformers", "--output", str(out))
    assert code == 2 and err.startswith("error:") and str(out) in err and "Traceback" not in err, err
    assert (tmp_path / "afile").read_text() == "keep"


def test_disk_full_during_export(faults_env, tmp_path, cli, monkeypatch):
    import errno

    from sparse.export import sentence_transformers_dir

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "model.safetensors"))

    monkeypatch.setattr(sentence_transformers_dir, "write_sentence_transformers", full)
    code, _, err = _export(cli, faults_env["model"], "--to", "sentence-transformers", "--output",
                           str(tmp_path / "out"))
    assert code == 2 and "No space left on device" in err and "model.safetensors" in err, err
    assert not (tmp_path / "out").exists()  # the half export is removed
