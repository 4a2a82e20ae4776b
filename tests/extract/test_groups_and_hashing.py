"""The staged group write both Zarr stores use, and the hashing helpers every resume digest comes from."""

import hashlib
import json
import os

import numpy as np
import pytest
import zarr

from slidemil.core.hashing import array_sha256, file_fingerprint, file_sha256, json_sha256
from slidemil.extract.store.groups import group_name, read_attrs, write_group


def _fill(values):
    def fill(group):
        group.create_array("x", data=np.asarray(values, dtype=np.int64), chunks=(max(1, len(values)),))
    return fill


@pytest.fixture
def store(tmp_path):
    zarr.open_group(tmp_path / "store", mode="a")
    return tmp_path / "store"


def test_group_attrs_are_written_once_with_complete_last(tmp_path, store, monkeypatch):
    writes = []
    real_update = zarr.Group.update_attributes
    monkeypatch.setattr(zarr.Group, "update_attributes",
                        lambda self, attrs: writes.append(attrs) or real_update(self, attrs))
    write_group(tmp_path / "store" / "s1", tmp_path / "staging" / "s1", {"b": 1, "a": [1, 2]}, _fill([3, 4]))
    attrs = read_attrs(tmp_path / "store" / "s1")
    assert list(attrs) == ["b", "a", "complete"] and attrs["complete"] is True  # set at creation, in order
    assert writes == []  # no attribute update after the group was created
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "store" / "s1" / "x")[:], [3, 4])
    assert not (tmp_path / "staging" / "s1").exists()


def test_a_failed_write_leaves_the_old_group_and_no_staging(tmp_path, store):
    final, staged = tmp_path / "store" / "s1", tmp_path / "staging" / "s1"
    write_group(final, staged, {"v": 1}, _fill([1]))

    def broken(group):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_group(final, staged, {"v": 2}, broken)
    assert read_attrs(final)["v"] == 1 and not staged.exists()
    write_group(final, staged, {"v": 3}, _fill([7, 8, 9]))  # a later write replaces it
    assert read_attrs(final)["v"] == 3 and zarr.open_array(final / "x").shape == (3,)
    assert [p.name for p in staged.parent.iterdir()] == []  # the replaced group was removed


def test_group_names_are_folder_safe():
    assert group_name("a/b c") == "a%2Fb%20c"
    assert group_name(".hidden") == "%2Ehidden"
    assert read_attrs(__import__("pathlib").Path("/nonexistent")) == {}


def test_json_digests_keep_both_historic_forms():
    obj = {"b": [1, 2.5], "a": {"z": None, "y": "µm"}}
    spaced = json.dumps(obj, sort_keys=True, default=str).encode()
    compact = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    assert json_sha256(obj) == hashlib.sha256(spaced).hexdigest()  # store and tile digests
    assert json_sha256(obj, compact=True) == hashlib.sha256(compact).hexdigest()  # MLflow tags
    assert json_sha256(obj) != json_sha256(obj, compact=True)


def test_array_and_file_digests(tmp_path):
    a = np.arange(6, dtype=np.int64).reshape(3, 2)
    assert array_sha256(a) == array_sha256(np.asfortranarray(a))  # layout does not matter
    assert array_sha256(a) != array_sha256(a.reshape(2, 3)) != array_sha256(a.astype(np.int32))
    path = tmp_path / "w.bin"
    path.write_bytes(b"x" * 100)
    assert file_sha256(path, chunk_bytes=7) == hashlib.sha256(b"x" * 100).hexdigest()
    before = file_fingerprint(path)
    assert before.startswith("100:")
    os.utime(path, ns=(1, 2))
    assert file_fingerprint(path) == before  # a copy's new mtime is no change (a moved cohort resumes)
    big = tmp_path / "slide.bin"
    content = bytearray(np.random.default_rng(0).integers(0, 256, 5_000, dtype=np.uint8).tobytes())
    big.write_bytes(content)
    fingerprints = {file_fingerprint(big, block_bytes=1000)}
    for offset in (0, 2_100, 4_999):  # a change in the start, middle or end block is seen
        changed = bytearray(content)
        changed[offset] ^= 0xFF
        big.write_bytes(changed)
        fingerprints.add(file_fingerprint(big, block_bytes=1000))
    big.write_bytes(content + b"\0")
    fingerprints.add(file_fingerprint(big, block_bytes=1000))
    assert len(fingerprints) == 5
