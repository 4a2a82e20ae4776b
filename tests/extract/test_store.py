"""Feature store: layout, atomic groups, locks, reader API, bag loading equal to zarr's own reader."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zarr

from slidemil.core.errors import StoreError
from slidemil.extract.store import FeatureStoreWriter, SlideLock, chunk_rows, open_features


def _write(root, slide_id, n, d=64, dtype=np.float32, attrs=None):
    writer = FeatureStoreWriter(root, "tiny_test", "random:0", d)
    rng = np.random.default_rng(n)
    features = rng.normal(size=(n, d)).astype(dtype)
    coords = rng.integers(0, 10_000, size=(n, 2))
    with writer.lock(slide_id) as lock:
        writer.write_slide(slide_id, features, coords, attrs or {"inputs_digest": "x"}, lock)
    return features, coords


def test_roundtrip_layout_and_attrs(tmp_path):
    root = tmp_path / "tiny_test.zarr"
    f1, c1 = _write(root, "s1", 3000)
    f0, c0 = _write(root, "empty", 0)
    f2, c2 = _write(root, "half", 5, dtype=np.float16)
    store = open_features(root)
    assert store.slide_ids == ["empty", "half", "s1"]
    assert (store.encoder_id, store.weights_sha256) == ("tiny_test", "random:0")
    for sid, (f, c) in {"s1": (f1, c1), "empty": (f0, c0), "half": (f2, c2)}.items():
        features, coords = store.load(sid)
        np.testing.assert_array_equal(features, f)
        np.testing.assert_array_equal(store.load_features(sid), f)  # without the coords: the same features
        np.testing.assert_array_equal(coords, c)
        assert features.dtype == f.dtype and coords.dtype == np.int64
        # same values as zarr's own reader
        np.testing.assert_array_equal(zarr.open_array(root / sid / "features", mode="r")[...], f)
    assert store.load("empty")[0].shape == (0, 64)
    array = zarr.open_array(root / "s1" / "features", mode="r")
    assert array.metadata.dimension_names == ("patch", "feature")
    assert array.chunks[0] * 64 * 4 >= 2**20 and array.shards[0] >= 3000  # ≥ 1 MB chunks, one shard
    assert len(os.listdir(root / "s1" / "features" / "c" / "0")) == 1
    attrs = store.attrs("s1")
    assert attrs["complete"] is True and attrs["n_patches"] == 3000
    fd, cd = store.to_dask("s1")
    np.testing.assert_allclose(fd.sum(axis=0).compute(), f1.sum(axis=0), rtol=1e-5)
    assert cd.shape == (3000, 2)


def test_incomplete_group_is_invisible(tmp_path):
    root = tmp_path / "tiny_test.zarr"
    _write(root, "s1", 10)
    meta = root / "s1" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["complete"] = False
    meta.write_text(json.dumps(doc))
    store = open_features(root)
    assert store.slide_ids == []
    with pytest.raises(StoreError, match="s1"):
        store.load("s1")
    with pytest.raises(StoreError, match="s1"):
        store.load_features("s1")


def test_rewrite_replaces_group(tmp_path):
    root = tmp_path / "tiny_test.zarr"
    _write(root, "s1", 10)
    f, _ = _write(root, "s1", 7)
    np.testing.assert_array_equal(open_features(root).load("s1")[0], f)
    assert not any((root / ".staging").iterdir())


def test_refuses_misaligned_rows_and_other_encoder(tmp_path):
    root = tmp_path / "tiny_test.zarr"
    writer = FeatureStoreWriter(root, "tiny_test", "random:0", 4)
    with writer.lock("s1") as lock, pytest.raises(StoreError, match="5 feature rows but 4 coords"):
        writer.write_slide("s1", np.zeros((5, 4), np.float32), np.zeros((4, 2), np.int64), {}, lock)
    with pytest.raises(StoreError, match="encoder 'tiny_test'"):
        FeatureStoreWriter(root, "conch_v1", "x", 512)
    with pytest.raises(StoreError, match="empty slide_id"):
        writer.lock("")


def test_awkward_slide_ids_round_trip(tmp_path):
    root = tmp_path / "tiny_test.zarr"
    for sid in ("a/b", ".hidden", "__x", "NA", "007"):
        _write(root, sid, 3)
    assert open_features(root).slide_ids == sorted(["a/b", ".hidden", "__x", "NA", "007"])
    assert open_features(root).load("a/b")[0].shape == (3, 64)


def test_chunk_rows_at_least_one_megabyte():
    assert chunk_rows(512, 4) * 512 * 4 >= 2**20
    assert chunk_rows(2, 8) * 16 >= 2**20


def test_lock_is_exclusive_and_stale_lock_of_dead_pid_is_broken(tmp_path):
    path = tmp_path / "s.lock"
    first = SlideLock(path)
    assert first.acquire()
    assert not SlideLock(path).acquire()
    first.release()
    # a lock left by a process that died (SIGKILL) on this host is broken
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(proc.stdout)
    path.write_text(json.dumps({"host": os.uname().nodename, "pid": dead_pid}))
    assert SlideLock(path).acquire()
    # a lock of another host is stale only after it stopped being refreshed
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    assert not SlideLock(path, stale_after=60).acquire()
    os.utime(path, (0, 0))
    assert SlideLock(path, stale_after=60).acquire()


def test_patient_level_bags_concatenate_the_patients_slides(tmp_path):
    from slidemil.pipeline.data import MethodData

    root = tmp_path / "tiny_test.zarr"
    fa, ca = _write(root, "a", 7)
    fb, cb = _write(root, "b", 4)
    data = MethodData(splits={}, store=open_features(root), classes=["x"], labels={}, patients={}, tags={},
                      members={"p1": ["a", "b"]})
    features, coords = data.load("p1")
    np.testing.assert_array_equal(features, np.concatenate([fa, fb]))
    np.testing.assert_array_equal(coords, np.concatenate([ca, cb]))
    np.testing.assert_array_equal(data.load_features("p1"), features)
    slide_level = MethodData(splits={}, store=open_features(root), classes=["x"], labels={}, patients={}, tags={})
    np.testing.assert_array_equal(slide_level.load_features("b"), fb)
