"""episodes.atomic: outputs appear complete or not at all."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from episodes.atomic import atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_parquet, atomic_write_text


def test_file_writers_replace_content_and_leave_no_temporaries(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_text(tmp_path / "a.txt", "two")
    assert (tmp_path / "a.txt").read_text() == "two"
    atomic_write_bytes(tmp_path / "sub" / "b.bin", b"\x00\x01")
    assert (tmp_path / "sub" / "b.bin").read_bytes() == b"\x00\x01"
    atomic_write_json(tmp_path / "c.json", {"ü": [1, 2]})
    assert json.loads((tmp_path / "c.json").read_text(encoding="utf-8")) == {"ü": [1, 2]}
    atomic_write_parquet(tmp_path / "d.parquet", pa.table({"x": [1, 2, 3]}))
    assert pq.read_table(tmp_path / "d.parquet")["x"].to_pylist() == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "c.json", "d.parquet", "sub"]


def test_failed_file_write_keeps_the_old_file(tmp_path):
    atomic_write_json(tmp_path / "c.json", {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "c.json", {"bad": object()})
    assert json.loads((tmp_path / "c.json").read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


def test_atomic_dir_commits_on_success(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(f"out.tmp-{os.getpid()}-")
        (tmp / "f.txt").write_text("x")
        assert not target.exists()  # nothing visible before commit
    assert (target / "f.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_dir_exception_leaves_nothing(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(target) as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_refuses_existing_target_without_overwrite(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(FileExistsError, match="--overwrite"):
        with atomic_dir(target):
            pass
    assert (target / "old.txt").read_text() == "old"


def test_atomic_dir_overwrite_swaps_only_when_complete(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    # A failed overwrite keeps the old content.
    with pytest.raises(RuntimeError):
        with atomic_dir(target, overwrite=True) as tmp:
            (tmp / "new.txt").write_text("new")
            assert (target / "old.txt").exists()
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    # A successful one replaces it entirely.
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").exists()
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_unwritable_location_raises_a_clear_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="a_file"):
        with atomic_dir(blocker / "dataset"):
            pass
    with pytest.raises(OSError, match="a_file"):
        atomic_write_text(blocker / "x.txt", "y")
