"""Training data: item construction, lazy rows, filters, malformed-data errors, global batch sampling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sparse.data.collators import TrainingCollator
from sparse.data.datasets import (KDDataset, PosNegsDataset, build_dataset, dataset_paths, dataset_repeats,
                                  partial_shuffle)
from sparse.data.sampler import ConcatItems, GlobalBatchSampler
from sparse.errors import UserError


def _ds(rows):
    import datasets

    return datasets.Dataset.from_list(rows)


def test_posnegs_chunks_negatives_and_drops_tail():
    ds = _ds([{"query": "q0", "pos": "p0", "negs": ["a", "b", "c", "d", "e"]},
              {"query": "q1", "pos": "p1", "negs": ["f", "g"]}])
    data = PosNegsDataset(ds, 2)
    assert len(data) == 3  # 5 // 2 + 2 // 2
    assert [data[i]["docs"] for i in range(3)] == [["p0", "a", "b"], ["p0", "c", "d"], ["p1", "f", "g"]]
    assert data[2]["query"] == "q1" and data[0]["scores"] is None


def test_kd_strided_grouping_matches_reference():
    docs = [f"d{i}" for i in range(10)]
    ds = _ds([{"query": "q", "docs": docs, "scores": [float(10 - i) for i in range(10)]}])
    data = KDDataset(ds, 2)
    # n = 10, s = 2 -> step 5: pairs (rank i, rank i + 5)
    assert len(data) == 5
    assert [data[i]["docs"] for i in range(5)] == [[f"d{i}", f"d{i + 5}"] for i in range(5)]
    assert data[1]["scores"] == [9.0, 4.0]
    three = KDDataset(ds, 3, score_scale=2.0)  # step 3: (0,3,6), (1,4,7), (2,5,8); d9 unused
    assert [three[i]["docs"] for i in range(3)] == [["d0", "d3", "d6"], ["d1", "d4", "d7"], ["d2", "d5", "d8"]]
    assert three[0]["scores"] == [20.0, 14.0, 8.0]


def test_swap_times_is_a_working_integer_count():
    rng = np.random.default_rng(0)
    idx = partial_shuffle(10, 2, rng)
    assert sorted(idx) == list(range(10)) and (idx != np.arange(10)).sum() <= 4
    full = partial_shuffle(10, 5, np.random.default_rng(1))
    assert sorted(full) == list(range(10))
    ds = _ds([{"query": "q", "docs": [f"d{i}" for i in range(10)], "scores": list(range(10))}])
    a, b = KDDataset(ds, 2, swap_times=3, seed=5), KDDataset(ds, 2, swap_times=3, seed=5)
    items = [a[i]["docs"] for i in range(5)]
    assert items == [b[i]["docs"] for i in range(5)]  # reproducible from (seed, row)
    assert sorted(d for it in items for d in it) == sorted(f"d{i}" for i in range(10))  # a permutation
    # the pairs follow the swapped order
    perm = partial_shuffle(10, 3, np.random.default_rng([5, 0]))
    assert items == [[f"d{perm[i]}", f"d{perm[i + 5]}"] for i in range(5)]


def test_first_rank_filter_drops_and_logs(caplog):
    rows = [{"query": f"q{i}", "docs": ["a", "b"], "scores": [1.0, 0.0], "first_rank": r}
            for i, r in enumerate([0, 5, -1, 20, 3])]
    with caplog.at_level("INFO"):
        data = KDDataset(_ds(rows), 2, first_rank_thresh=5)
    assert [data[i]["query"] for i in range(len(data))] == ["q0", "q1", "q4"]
    assert "drops 2 of 5 rows" in caplog.text


@pytest.mark.parametrize("rows,data_type,n,message", [
    ([{"query": "q", "negs": ["a"]}], "posnegs", 1, r"needs column\(s\) \['pos'\]"),
    ([{"query": "q", "pos": "p", "negs": ["a", "b"]}, {"query": "q", "pos": "p", "negs": []}], "posnegs", 1,
     "row 1 has an empty 'negs' list"),
    ([{"query": "q", "docs": ["a", "b", "c"], "scores": [1.0, 2.0]}], "kd", 2, "row 0 has 3 docs but 2 scores"),
    ([{"query": "q", "docs": ["a", "b", "c"]}, {"query": "q", "docs": ["a"]}], "kd", 2,
     "row 1 has 1 docs, fewer than sample_num_one_query=2"),
])
def test_malformed_data_names_file_row_and_problem(tmp_path, rows, data_type, n, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError, match=message) as err:
        build_dataset(str(path), data_type, n)
    assert str(path) in str(err.value)


def test_save_to_disk_and_train_file_dir(tmp_path):
    _ds([{"query": "q", "pos": "p", "negs": ["a", "b"]}]).save_to_disk(str(tmp_path / "dir" / "one"))
    (tmp_path / "dir" / "two.jsonl").write_text(json.dumps({"query": "q2", "pos": "p2", "negs": ["c"]}) + "\n")
    paths = dataset_paths(None, str(tmp_path / "dir"))
    assert [p.split("/")[-1] for p in paths] == ["one", "two.jsonl"]
    assert build_dataset(paths[0], "posnegs", 1)[1]["docs"] == ["p", "b"]
    with pytest.raises(UserError, match="not found"):
        build_dataset(str(tmp_path / "missing"), "posnegs", 1)
    with pytest.raises(UserError, match="no training data"):
        dataset_paths(None, None)


def test_global_batches_do_not_depend_on_world_size():
    sizes = [10, 7]
    one = list(GlobalBatchSampler(sizes, 4, world_size=1, rank=0, seed=3))
    ranks = [list(GlobalBatchSampler(sizes, 2, world_size=2, rank=r, seed=3)) for r in range(2)]
    assert len(one) == len(ranks[0]) == len(ranks[1]) == 2 + 1  # 10 // 4 + 7 // 4
    offsets = [0, 10]
    for step, batch in enumerate(one):
        assert ranks[0][step] + ranks[1][step] == batch
        # each global batch comes from one dataset, the same on every rank
        ds_of = {int(np.searchsorted(offsets, i, side="right") - 1) for i in batch}
        assert len(ds_of) == 1
    s = GlobalBatchSampler(sizes, 4, seed=3)
    s.set_epoch(1)
    assert list(s) != one  # a new order each epoch
    kept = GlobalBatchSampler([10], 4, drop_last=False)
    assert sorted(i for b in kept for i in b) == list(range(10))


def test_dataset_repeats_raise_a_dataset_share_without_repeating_an_item_in_a_batch():
    sizes = [8, 40]  # 2 and 10 batches of 4 a pass
    plain = GlobalBatchSampler(sizes, 4, seed=3)
    assert list(GlobalBatchSampler(sizes, 4, seed=3, repeats=[1, 1])) == list(plain)  # no repeats: as before
    s = GlobalBatchSampler(sizes, 4, seed=3, repeats=[3, 1])
    batches = list(s)
    assert len(batches) == len(s) == 3 * 2 + 10
    first = [b for b in batches if max(b) < 8]
    assert len(first) == 6 and all(len(set(b)) == len(b) for b in first)
    counts = np.bincount([i for b in first for i in b], minlength=8)
    assert (counts == 3).all()  # every item of the repeated dataset three times an epoch
    assert sorted(i for b in batches if min(b) >= 8 for i in b) == list(range(8, 48))  # the other once
    assert len({tuple(sorted(b)) for b in first}) > 2  # each pass is a permutation of its own
    # the 3 passes are spread over the epoch, not run back to back
    positions = [k for k, b in enumerate(batches) if max(b) < 8]
    assert positions != list(range(6))
    with pytest.raises(ValueError, match="repeats"):
        GlobalBatchSampler(sizes, 4, repeats=[0, 1])


def test_dataset_repeats_by_name(tmp_path):
    paths = [str(tmp_path / "labelled"), str(tmp_path / "pseudo"), str(tmp_path / "extra.jsonl")]
    assert dataset_repeats(paths, None) == [1, 1, 1]
    assert dataset_repeats(paths, {"labelled": 4, "extra": 2}) == [4, 1, 2]
    assert dataset_repeats(paths, {"extra.jsonl": 3}) == [1, 1, 3]
    with pytest.raises(UserError, match="names labeled, but the training datasets are labelled, pseudo"):
        dataset_repeats(paths, {"labeled": 4})
    for bad in (0, 1.5, True):
        with pytest.raises(UserError, match="whole numbers >= 1"):
            dataset_repeats(paths, {"labelled": bad})


def test_concat_items_and_collator():
    a = PosNegsDataset(_ds([{"query": "q0", "pos": "p0", "negs": ["a", "b"]}]), 1)
    b = KDDataset(_ds([{"query": "q1", "docs": ["x", "y"], "scores": [3.0, 1.0]}]), 2)
    cat = ConcatItems([a, b])
    assert len(cat) == 3 and cat[2]["query"] == "q1"

    def tokenize(texts, max_length):
        import torch

        return {"input_ids": torch.ones(len(texts), max_length, dtype=torch.long),
                "attention_mask": torch.ones(len(texts), max_length, dtype=torch.long)}

    coll = TrainingCollator(tokenize, 8, 4)
    out = coll([cat[2], cat[2]])
    assert out["q_input_ids"].shape == (2, 4) and out["d_input_ids"].shape == (4, 8)
    assert out["docs"] == ["x", "y", "x", "y"] and out["scores"].tolist() == [[3.0, 1.0], [3.0, 1.0]]
    assert "scores" not in coll([cat[0], cat[1]])
