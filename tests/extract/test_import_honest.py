"""Imports carry the true level-0 patch size and magnification or are refused; an import writes the features
manifest `split` reads; a cohort keyed by patient gets one early message (issue 15, class 6)."""

import argparse

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from slidemil.core.errors import CohortError
from slidemil.extract.store import open_features
from slidemil.pipeline.import_geometry import GeometryError, level0_geometry
from slidemil.pipeline.stages import import_features as stage
from slidemil.pipeline.stages import split


def _args(folder, output, **kw):
    base = {"input": folder, "output": output, "encoder_id": "uni_v1", "patch_size": None, "magnification": None,
            "weights_sha256": "unknown"}
    return argparse.Namespace(**{**base, **kw})


def _clam_h5(path, n=12, **coord_attrs):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=rng.normal(size=(n, 8)).astype(np.float32))
        f.create_dataset("coords", data=rng.integers(0, 9000, (n, 2))).attrs.update(coord_attrs)


@pytest.mark.parametrize(("attrs", "args", "expected"), [
    ({"patch_size": 256, "patch_level": 1, "downsample": [4.0, 4.0]}, {"magnification": 10}, (1024, 10.0)),
    ({"patch_size": 256, "patch_level": 0, "downsample": [1.0, 1.0]}, {"magnification": 20}, (256, 20.0)),
    ({"patch_size": 256, "patch_size_level0": 512, "target_magnification": 20, "level0_magnification": 40}, {},
     (512, 20.0)),
    ({"patch_size": 224, "level0_magnification": 40, "target_magnification": 20}, {}, (448, 20.0)),
])
def test_level0_geometry_honours_every_attribute(attrs, args, expected):
    assert level0_geometry(attrs, args.get("patch_size"), args.get("magnification")) == expected


@pytest.mark.parametrize(("attrs", "args", "named"), [
    ({"patch_size": 256, "patch_level": 2}, {}, "patch_level=2 without downsample"),
    ({"patch_size": 256, "patch_size_level0": 1024, "target_magnification": 20, "level0_magnification": 40}, {},
     "level0_magnification / target_magnification gives 512 but patch_size_level0 gives 1024"),
    ({"patch_size": 256, "patch_level": 1, "downsample": [4.0, 4.0]}, {"patch_size": 256},
     "--patch-size gives 256 but patch_size × downsample gives 1024"),
    ({"patch_size": 256, "downsample": [4.0, 2.0]}, {}, "downsample=[4.0, 2.0] differs in x and y"),
])
def test_missing_or_contradicting_attributes_are_named(attrs, args, named):
    with pytest.raises(GeometryError, match=named.replace("×", ".").replace("[", r"\[").replace("]", r"\]")):
        level0_geometry(attrs, args.get("patch_size"), args.get("magnification"))


def test_clam_level1_import_stores_level0_size_and_manifest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "h5_files"
    src.mkdir()
    _clam_h5(src / "slide-1.h5", patch_size=256, patch_level=1, downsample=[4.0, 4.0])
    _clam_h5(src / "slide-2.h5", patch_size=256, patch_level=2)  # refused: no downsample
    assert stage.run({}, _args(src, None, magnification=10)) == 1
    store = open_features("data/features/uni_v1.zarr")
    assert store.slide_ids == ["slide-1"] and store.attrs("slide-1")["patch_size_level0"] == 1024
    manifest = pd.read_csv("data/features/manifest.csv").set_index("slide_id")
    assert manifest.loc["slide-1", "status"] == "ok" and manifest.loc["slide-1", "n_patches"] == 12
    assert manifest.loc["slide-2", "status"] == "failed" and "patch_level=2" in manifest.loc["slide-2", "reason"]

    # split with its default require_features reads that manifest: a cohort keyed by patient is named at once
    pd.DataFrame({"slide_id": ["P1", "P2"], "path": ["p1.svs", "p2.svs"], "label": ["a", "b"]}).to_csv("cohort.csv",
                                                                                           index=False)
    params = {"cohort": "cohort.csv", "task": {"label": "label"}, "split": {"n_folds": 2, "tiles_manifest": ""}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(CohortError, match="none of your slide_ids match the store .*cohort P1, P2; store slide-1"):
        split.run(params, None)
