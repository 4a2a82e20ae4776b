"""slidemil import-features: CLAM / TRIDENT .h5 and .pt files into a store of the same contract."""

import argparse

import h5py
import numpy as np
import pytest
import torch

from extract.store import open_features
from pipeline.errors import ParamsError
from pipeline.stages import import_features as stage


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


def test_clam_pt_with_sibling_h5_and_arguments(tmp_path):
    features, coords = _bag(10, seed=1)
    (tmp_path / "pt_files").mkdir()
    (tmp_path / "h5_files").mkdir()
    torch.save(torch.from_numpy(features), tmp_path / "pt_files" / "s1.pt")
    with h5py.File(tmp_path / "h5_files" / "s1.h5", "w") as f:
        f.create_dataset("coords", data=coords).attrs.update({"patch_size": 256, "patch_level": 0})
        f.create_dataset("features", data=features[None])  # CLAM writes [1, N, D] in some versions
    out = tmp_path / "store.zarr"
    with pytest.raises(ParamsError, match="encoder-id, magnification; pass --encoder-id --magnification"):
        stage.run({}, _args(tmp_path / "pt_files", out))
    assert stage.run({}, _args(tmp_path / "pt_files", out, encoder_id="resnet50_trunc", magnification=20)) == 0
    got_f, got_c = open_features(out).load("s1")
    np.testing.assert_array_equal(got_f, features)
    np.testing.assert_array_equal(got_c, coords)


def test_pt_without_coords_is_refused(tmp_path):
    torch.save(torch.zeros(3, 8), tmp_path / "lonely.pt")
    with pytest.raises(Exception, match="features only"):
        stage.run({}, _args(tmp_path, tmp_path / "s.zarr", encoder_id="x", patch_size=256, magnification=20))
