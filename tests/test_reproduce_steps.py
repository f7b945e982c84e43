"""Step keys of the resumable pipelines (sparse/reproduce/steps.py)."""

from __future__ import annotations

from sparse.reproduce.steps import digest


def test_a_key_names_its_root_folders_so_a_moved_folder_keeps_it():
    before = (("/data/run", "<output>"), ("/data/cache", "<cache>"))
    after = (("/elsewhere/run2", "<output>"), ("/elsewhere/cache", "<cache>"))
    parts = ("train", ["idf_path=/data/run/idf/idf.json", "cache_dir=/data/cache"], {"model": "/data/run"})
    moved = ("train", ["idf_path=/elsewhere/run2/idf/idf.json", "cache_dir=/elsewhere/cache"],
             {"model": "/elsewhere/run2"})
    assert digest(*parts, roots=before) == digest(*moved, roots=after)
    assert digest(*parts) != digest(*moved)  # without roots a path is part of the key
    # a folder whose name only starts with a root's is another folder
    assert digest("/data/run2/x", roots=before) != digest("/elsewhere/run2/x", roots=after)
    assert digest("/data/run2/x", roots=before) == digest("/data/run2/x")
    # an input outside every root still tells two runs apart
    assert digest("/data/run/a", "/corpus/one", roots=before) != digest("/data/run/a", "/corpus/two", roots=before)


def test_a_root_inside_another_root_is_named_first():
    roots = (("/repo", "<repo>"), ("/repo/output/adapt", "<output>"))
    moved = (("/clone", "<repo>"), ("/tmp/out", "<output>"))
    assert digest("/repo/output/adapt/kd", "/repo/assets/m", roots=roots) == \
        digest("/tmp/out/kd", "/clone/assets/m", roots=moved)
