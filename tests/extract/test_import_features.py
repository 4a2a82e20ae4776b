"""slidemil import-features: CLAM / TRIDENT .h5 and .pt files into a store of the same contract."""

import argparse
import logging

import h5py
import numpy as np
import pytest
import torch

from slidemil.core.errors import ParamsError
from slidemil.extract.store import open_features
from slidemil.pipeline.stages import import_features as stage


def _args(folder, output, **kw):
    base = {"input": folder, "output": output, "encoder_id": None, "patch_size": None, "magnification": None,
            "weights_sha256": "unknown"}
    return argparse.Namespace(**{**base, **kw})


def _bag(n, d=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, 50_000, size=(n, 2))


def test_trident_h5_with_attrs(tmp_path):
    features, coords = _bag(40)
    with h5py.File(tmp_path / "slideA.h5", "w") as f:
        f.create_dataset("features", data=features, chunks=(1, 32))
        c = f.create_dataset("coords", data=coords)
        c.attrs.update({"patch_size": 256, "patch_size_level0": 512, "target_magnification": 20,
                        "level0_magnification": 40, "name": "slideA"})
        f["features"].attrs["encoder"] = "conch_v15"
    out = tmp_path / "store.zarr"
    assert stage.run({}, _args(tmp_path, out)) == 0
    store = open_features(out)
    assert store.slide_ids == ["slideA"] and store.encoder_id == "conch_v15"
    got_f, got_c = store.load("slideA")
    np.testing.assert_array_equal(got_f, features)
    np.testing.assert_array_equal(got_c, coords)
    attrs = store.attrs("slideA")
    assert (attrs["patch_size_level0"], attrs["magnification"]) == (512, 20.0)


def test_clam_pt_with_sibling_h5_and_arguments(tmp_path, caplog):
    features, coords = _bag(10, seed=1)
    (tmp_path / "pt_files").mkdir()
    (tmp_path / "h5_files").mkdir()
    torch.save(torch.from_numpy(features), tmp_path / "pt_files" / "s1.pt")
    with h5py.File(tmp_path / "h5_files" / "s1.h5", "w") as f:
        f.create_dataset("coords", data=coords).attrs.update({"patch_size": 256, "patch_level": 0})
        f.create_dataset("features", data=features[None])  # CLAM writes [1, N, D] in some versions
    out = tmp_path / "store.zarr"
    with caplog.at_level(logging.ERROR):
        assert stage.run({}, _args(tmp_path / "pt_files", out)) == 1
    assert "s1.pt not imported" in caplog.text
    assert "encoder-id, magnification; pass --encoder-id --magnification" in caplog.text
    assert stage.run({}, _args(tmp_path / "pt_files", out, encoder_id="resnet50_trunc", magnification=20)) == 0
    got_f, got_c = open_features(out).load("s1")
    np.testing.assert_array_equal(got_f, features)
    np.testing.assert_array_equal(got_c, coords)


def test_pt_without_coords_is_refused(tmp_path, caplog):
    torch.save(torch.zeros(3, 8), tmp_path / "lonely.pt")
    with caplog.at_level(logging.ERROR):
        assert stage.run({}, _args(tmp_path, tmp_path / "s.zarr", encoder_id="x", patch_size=256,
                                   magnification=20)) == 1
    assert "lonely.pt not imported" in caplog.text and "features only" in caplog.text


def _write_h5(path, features, coords=None):
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=features)
        if coords is not None:
            f.create_dataset("coords", data=coords)


def test_bad_files_are_reported_and_the_others_imported(tmp_path, caplog):
    features, coords = _bag(12, seed=2)
    _write_h5(tmp_path / "a_good.h5", features, coords)
    (tmp_path / "b_garbage.h5").write_bytes(b"this is not an HDF5 file" * 10)
    _write_h5(tmp_path / "c_nocoords.h5", features)
    _write_h5(tmp_path / "d_good.h5", features[:5], coords[:5])
    (tmp_path / "e_garbage.pt").write_bytes(b"\x00garbage")
    out = tmp_path / "store.zarr"
    args = _args(tmp_path, out, encoder_id="uni_v1", patch_size=256, magnification=20)
    with caplog.at_level(logging.INFO):
        assert stage.run({}, args) == 1  # no exception: each bad file is reported
    assert open_features(out).slide_ids == ["a_good", "d_good"]
    np.testing.assert_array_equal(open_features(out).load("d_good")[1], coords[:5])
    errors = {r.getMessage().split()[1]: r.getMessage() for r in caplog.records if r.levelno == logging.ERROR}
    assert sorted(errors) == ["b_garbage.h5", "c_nocoords.h5", "e_garbage.pt"]
    assert "not a readable HDF5 file" in errors["b_garbage.h5"]
    assert "needs datasets 'features' and 'coords', found ['features']" in errors["c_nocoords.h5"]
    assert "not a readable PyTorch file" in errors["e_garbage.pt"]
    assert "2 of 5 files imported" in caplog.text
    assert "3 failed (see the errors above): b_garbage.h5, c_nocoords.h5, e_garbage.pt" in caplog.text
    caplog.clear()
    for bad in ("b_garbage.h5", "c_nocoords.h5", "e_garbage.pt"):
        (tmp_path / bad).unlink()
    assert stage.run({}, args) == 0  # the rest are up to date


def test_file_of_another_width_does_not_join_the_store(tmp_path, caplog):
    _write_h5(tmp_path / "a.h5", *_bag(4, d=32))
    _write_h5(tmp_path / "b.h5", *_bag(4, d=16))
    with caplog.at_level(logging.ERROR):
        code = stage.run({}, _args(tmp_path, tmp_path / "s.zarr", encoder_id="x", patch_size=256, magnification=20))
    assert code == 1 and open_features(tmp_path / "s.zarr").slide_ids == ["a"]
    assert "b.h5 not imported" in caplog.text and "D=16" in caplog.text


def test_empty_folder_is_a_usage_error(tmp_path):
    with pytest.raises(ParamsError, match="no .h5 or .pt feature files found"):
        stage.run({}, _args(tmp_path, tmp_path / "s.zarr"))
