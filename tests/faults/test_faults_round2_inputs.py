"""Round 2, bad input: each case ends with one clear ``error:`` line naming the file (and the row,
line or byte where there is one), exit code 2, no traceback, and nothing written (no output folder,
no ``train.log``, no ``train_config.yaml``)."""

from __future__ import annotations

import json
import math
import os
import re

import pytest


TRAIN = ["model_name_or_path={model}", "train_file={posnegs}", "data_type=posnegs", "loss_types=[infonce]",
         "output_dir={out}", "max_steps=1", "report_to=none", "max_seq_length=16"]
KD = ["data_type=kd", "loss_types=[kldiv]"]
FIT = ["freeze_document_encoder=true", "inf_free=true", "idf_requires_grad=true"]  # the query-side fit path


EVAL = ["--model_name_or_path", "{model}", "--beir_dir", "{beir}", "--beir_datasets", "tinyset",
        "--output_dir", "{out}"]


def _eval(model: str, *extra):
    return ["--model_name_or_path", model, *EVAL[2:], *extra]


def _train(*extra, **replace):
    args = [a for a in TRAIN if a.split("=")[0] not in replace]
    return args + [f"{k}={v}" for k, v in replace.items()] + list(extra)


# (id, entry point, argv with {placeholders}, regex the one error line must match)
CASES = [
    # rows type-checked at load
    ("posnegs-pos-is-list", "train_ir", _train(train_file="{f[pos_list]}"),
     r"pos_list\.jsonl: row 3: 'pos' must be a text, got a list"),
    ("posnegs-pos-is-list-every-row", "train_ir", _train(train_file="{f[pos_list_all]}"),
     r"pos_list_all\.jsonl: row 0: 'pos' must be a text, got a list"),
    ("posnegs-negs-numbers", "train_ir", _train(train_file="{f[negs_num]}"),
     r"negs_num\.jsonl: row 2: 'negs' must be a list of texts, one element is a number"),
    ("posnegs-negs-numbers-every-row", "train_ir", _train(train_file="{f[negs_num_all]}"),
     r"negs_num_all\.jsonl: row 0: 'negs' must be a list of texts, one element is a number"),
    ("posnegs-query-number", "train_ir", _train(train_file="{f[query_num]}"),
     r"query_num\.jsonl: row 1: 'query' must be a text, got a number"),
    ("kd-scores-strings", "train_ir", _train(*KD, train_file="{f[kd_str]}"),
     r"kd_str\.jsonl: row 4: 'scores' must be a list of numbers, one score is a text \('high'\)"),
    ("kd-scores-all-strings", "train_ir", _train(*KD, train_file="{f[kd_str_all]}"),
     r"kd_str_all\.jsonl: row 0: 'scores' must be a list of numbers, one score is a text"),
    ("kd-scores-nan", "train_ir", _train(*KD, train_file="{f[kd_nan]}"),
     r"kd_nan\.jsonl: row 5: 'scores' holds NaN or infinite values"),
    ("kd-scores-null", "train_ir", _train(*KD, train_file="{f[kd_null]}"),
     r"kd_null\.jsonl: row 1: 'scores' must be a list of numbers, one score is null"),
    ("kd-docs-scores-differ-query-fit", "train_ir", _train(*KD, *FIT, train_file="{f[kd_mismatch]}"),
     r"kd_mismatch\.jsonl: row 0 has 4 docs but 3 scores"),
    ("kd-scores-strings-query-fit", "train_ir", _train(*KD, *FIT, train_file="{f[kd_str]}"),
     r"kd_str\.jsonl: row 4: 'scores' must be a list of numbers"),
    ("posnegs-pos-list-query-fit", "train_ir", _train(*FIT, train_file="{f[pos_list]}"),
     r"pos_list\.jsonl: row 3: 'pos' must be a text"),
    # checks that used to run after train.log / train_config.yaml were written
    ("loss-needs-scores", "train_ir", _train(loss_types="[kldiv]"), r"need teacher scores"),
    ("query-fit-wrong-loss", "train_ir", _train(*FIT, loss_types="[kldiv]"),
     r"freeze_document_encoder with posnegs rows supports loss_types \['infonce'\]"),
    ("query-fit-not-inf-free", "train_ir", _train(*FIT, "inf_free=false"), r"set inf_free: true"),
    ("query-fit-kd-without-scores", "train_ir", _train(*KD, *FIT, train_file="{f[kd_noscores]}"),
     r"kd rows need a 'scores' column"),
    # IDF files that would make every query silently wrong
    ("idf-nan-train", "train_ir", _train(idf_path="{f[idf_nan]}"), r"idf_nan\.json: 2 of \d+ weights are NaN"),
    ("idf-nan-eval", "evaluate_beir", _eval("{f[model_idf_nan]}"), r"weights are NaN or infinite"),
    ("idf-all-nonpositive-eval", "evaluate_beir", _eval("{f[model_idf_zero]}"),
     r"every one of its \d+ weights is <= 0"),
    ("idf-infinite-train", "train_ir", _train(idf_path="{f[idf_inf]}"), r"NaN or infinite"),
    # a tokenizer that is not the model's
    ("tokenizer-larger-than-model", "train_ir", _train(tokenizer_name="{f[tok_bigger]}"),
     r"tokenizer .*tok_bigger has 25 tokens but the model .* has 23 outputs"),
    ("model-vocab-larger-than-tokenizer", "evaluate_beir", _eval("{f[model_vocab40]}"),
     r"has 23 tokens but the model .*model_vocab40 has 40 outputs"),
    # damaged weights
    ("safetensors-garbage-eval", "evaluate_beir", _eval("{f[w_garbage]}"),
     r"the weights in .*w_garbage/model\.safetensors are damaged .*re-copy"),
    ("safetensors-cut-short-eval", "evaluate_beir", _eval("{f[w_cut]}"),
     r"the weights in .*w_cut/model\.safetensors are damaged .*re-copy"),
    ("safetensors-cut-short-train", "train_ir", _train(model_name_or_path="{f[w_cut]}"),
     r"w_cut/model\.safetensors are damaged"),
    ("pytorch-bin-cut-short-eval", "evaluate_beir", _eval("{f[w_bin_cut]}"),
     r"the weights in .*w_bin_cut/pytorch_model\.bin are damaged .*re-copy"),
    ("tokenizer-json-damaged-eval", "evaluate_beir", _eval("{f[tok_damaged]}"),
     r"cannot load the tokenizer .*tok_damaged"),
    ("ensemble-teacher-missing", "train_ir",
     _train(*KD, "train_file={kd}", "kd_ensemble_teacher_kwargs={{types: [dense], model_ids: [{tmp}/no/such/teacher]}}"),
     r"no/such/teacher"),
]


@pytest.fixture(scope="module")
def bad(tmp_path_factory, faults_env, jsonl_writer):
    """Files that are wrong in one way each; {name: path}."""
    root = tmp_path_factory.mktemp("bad2")
    rows = faults_env["rows"]
    kd = [{"query": r["query"], "docs": [r["pos"], *r["negs"]], "scores": [4.0, 3.0, 2.0, 1.0]} for r in rows]
    files = {}

    def put(name, data):
        files[name] = jsonl_writer(root / f"{name}.jsonl", data)

    put("pos_list", [{**r, "pos": [r["pos"], r["pos"]]} if i == 3 else r for i, r in enumerate(rows)])
    put("pos_list_all", [{**r, "pos": [r["pos"]]} for r in rows])
    put("negs_num", [{**r, "negs": [1, 2, 3]} if i == 2 else r for i, r in enumerate(rows)])
    put("negs_num_all", [{**r, "negs": [1, 2, 3]} for r in rows])
    put("query_num", [{**r, "query": 42} if i == 1 else r for i, r in enumerate(rows)])
    put("kd_str", [{**r, "scores": [4.0, "high", 2.0, 1.0]} if i == 4 else r for i, r in enumerate(kd)])
    put("kd_str_all", [{**r, "scores": ["4", "3", "2", "1"]} for r in kd])
    put("kd_nan", [{**r, "scores": [4.0, math.nan, 2.0, 1.0]} if i == 5 else r for i, r in enumerate(kd)])
    put("kd_null", [{**r, "scores": [4.0, None, 2.0, 1.0]} if i == 1 else r for i, r in enumerate(kd)])
    put("kd_noscores", [{"query": r["query"], "docs": r["docs"]} for r in kd])
    put("kd_mismatch", [{**r, "scores": [3.0, 2.0, 1.0]} for r in kd])
    _idf_and_model_files(root, faults_env["model"], files)
    return files


def _copy_model(src, dst, idf=None):
    import shutil

    shutil.copytree(src, dst)
    if idf is not None:
        (dst / "idf.json").write_text(json.dumps(idf))
    return str(dst)


def _idf_and_model_files(root, model, files):
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    words = [t for t in tok.get_vocab() if t.isalpha()]
    nan_idf = {t: 1.0 for t in words}
    nan_idf[words[0]] = nan_idf[words[1]] = math.nan
    (root / "idf_nan.json").write_text(json.dumps(nan_idf))
    files["idf_nan"] = str(root / "idf_nan.json")
    (root / "idf_inf.json").write_text(json.dumps({words[0]: math.inf, words[1]: 1.0}))
    files["idf_inf"] = str(root / "idf_inf.json")
    files["model_idf_nan"] = _copy_model(model, root / "model_idf_nan", nan_idf)
    files["model_idf_zero"] = _copy_model(model, root / "model_idf_zero",
                                          {t: (0.0 if i % 2 else -1.5) for i, t in enumerate(tok.get_vocab())})
    bigger = AutoTokenizer.from_pretrained(model)
    bigger.add_tokens(["zebra", "quokka"])
    bigger.save_pretrained(root / "tok_bigger")
    files["tok_bigger"] = str(root / "tok_bigger")
    config = AutoConfig.from_pretrained(model)
    config.vocab_size = 40
    AutoModelForMaskedLM.from_config(config).save_pretrained(root / "model_vocab40")
    tok.save_pretrained(root / "model_vocab40")
    files["model_vocab40"] = str(root / "model_vocab40")
    for name, damage in (("w_garbage", lambda b: b"\xff" * 8 + b[8:]), ("w_cut", lambda b: b[:len(b) // 2])):
        folder = root / name
        _copy_model(model, folder)
        weights = folder / "model.safetensors"
        weights.write_bytes(damage(weights.read_bytes()))
        files[name] = str(folder)
    import torch

    folder = root / "w_bin_cut"
    _copy_model(model, folder)
    state = AutoModelForMaskedLM.from_pretrained(model).state_dict()
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    data = (folder / "pytorch_model.bin").read_bytes()
    (folder / "pytorch_model.bin").write_bytes(data[:len(data) // 2])
    files["w_bin_cut"] = str(folder)
    folder = root / "tok_damaged"
    _copy_model(model, folder)
    (folder / "tokenizer.json").write_text('{"version": "1.0", "trunc')
    files["tok_damaged"] = str(folder)


def _fill(argv, faults_env, bad, tmp_path):
    values = {"model": faults_env["model"], "posnegs": faults_env["posnegs"], "kd": faults_env["kd"],
              "beir": faults_env["beir_dir"], "out": str(tmp_path / "out"), "tmp": str(tmp_path), "f": bad}
    return [a.format(**values) for a in argv]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_error(case, cli, faults_env, bad, tmp_path, monkeypatch):
    name, entry, argv, pattern = case
    monkeypatch.chdir(tmp_path)  # anything written to a default path would land here
    before = set(os.listdir(tmp_path))
    code, out, err = cli(entry, *_fill(argv, faults_env, bad, tmp_path))
    message = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(message) == 1, (code, out[-2000:], err[-3000:])
    assert re.search(pattern, message[0]), message[0]
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists(), f"a failed command left {os.listdir(tmp_path / 'out')}"
    assert set(os.listdir(tmp_path)) == before, "a failed command left files behind"
