"""The `tile` stage end to end on the real slides of demo/real and synthetic fault cases."""

import argparse
import json
import logging

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from slidemil.core.errors import CohortError, ParamsError
from slidemil.core.params import read_section
from slidemil.extract.sections import TileSection
from slidemil.extract.slide import open_slide
from slidemil.extract.tiles import open_tiles
from slidemil.pipeline.stages import tile

REAL = {
    "svs": "wsi-aperio-svs/CMU-1-Small-Region.svs",
    "ndpi_fluo": "wsi-hamamatsu-ndpi/test3-TRITC-2-560.ndpi",
    "camelyon": "wsi-dicom-camelyon/multiframe_camelyon_challenge_image.dcm",
    "os1_crop": "wsi-ome-tiff-he/OS-1-detail.ome.tif",
    "pyramid": "wsi-derived-cmu1/CMU-1-Small-Region.pyramid.tiff",
    "ome_pyramid": "wsi-derived-cmu1/CMU-1-Small-Region.ome.tiff",
    "dicom_series": "wsi-derived-cmu1/dicom/1.2.826.0.1.3680043.8.498.9899136569992917906874156422226849724.dcm",
}


def _run(tmp_path, rows, **tile_params) -> tuple[int, pd.DataFrame]:
    cohort = tmp_path / "cohort.csv"
    pd.DataFrame(rows).to_csv(cohort, index=False)
    params = {"cohort": str(cohort), "tile": {"output": str(tmp_path / "tiles"), **tile_params}}
    code = tile.run(params, argparse.Namespace(force=False))
    return code, open_tiles(tmp_path / "tiles").manifest().set_index("slide_id")


@pytest.fixture(scope="module")
def real_run(real_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    rows = [{"slide_id": k, "path": str(real_data / v), "patient_id": k, "mpp": ""} for k, v in REAL.items()]
    rows.append({"slide_id": "roi_blank", "path": str(real_data / "tiles-histolab-fixtures/no-tissue.png"),
                 "patient_id": "roi", "mpp": "0.5"})  # exactly one 256-µm patch
    rows.append({"slide_id": "missing", "path": str(tmp / "missing.svs"), "patient_id": "m", "mpp": ""})
    code, manifest = _run(tmp, rows)
    return tmp, code, manifest


def test_every_real_slide_gets_the_right_status(real_run):
    _, code, manifest = real_run
    assert code == 0
    assert list(manifest.columns) == ["status", "reason", "mpp", "mpp_source", "level", "n_patches", "tissue_mm2",
                                      "tissue_method", "seconds"]
    assert len(manifest) == len(REAL) + 2
    status = manifest["status"].to_dict()
    assert status["camelyon"] == "failed"
    assert "finer than the scan (28.97 µm/px)" in manifest.loc["camelyon", "reason"]
    assert status["ndpi_fluo"] == "ok"  # fluorescence: brightness threshold, no crash
    assert manifest.loc["ndpi_fluo", "tissue_method"] == "brightness"  # tile.tissue.method auto says what it chose
    assert manifest.loc["svs", "tissue_method"] == "od"
    assert status["os1_crop"] == "skipped" and "smaller than one patch" in manifest.loc["os1_crop", "reason"]
    assert status["roi_blank"] == "no_tissue" and manifest.loc["roi_blank", "n_patches"] == 0
    assert status["missing"] == "failed" and "not found" in manifest.loc["missing", "reason"]
    # the same CMU-1 pixels in four containers: same level-0 mpp, same plausible patch count
    cmu = manifest.loc[["svs", "pyramid", "ome_pyramid", "dicom_series"]]
    assert (cmu["status"] == "ok").all()
    assert cmu["n_patches"].min() >= 6 and cmu["n_patches"].max() - cmu["n_patches"].min() <= 1
    assert cmu["n_patches"].max() <= 20  # a 2220x2967 region holds 4x5 grid patches of 513 px
    assert manifest.loc["ome_pyramid", "mpp_source"] == "ome"
    assert "disagree in colour" in manifest.loc["dicom_series", "reason"]


def test_tiles_store_contract(real_run, real_data):
    tmp, _, _ = real_run
    store = open_tiles(tmp / "tiles")
    assert store.slide_ids == ["dicom_series", "ndpi_fluo", "ome_pyramid", "pyramid", "svs"]
    coords, fractions = store.load("svs")
    attrs = store.attrs("svs")
    assert attrs["tissue"]["method"] == "auto" and attrs["tissue"]["method_used"] == "od"
    assert min(attrs["tissue"]["background_rgb"]) > 230  # CMU-1's glass, estimated from the slide
    assert coords.dtype == np.int64 and coords.shape[1] == 2 and fractions.dtype == np.float32
    assert (fractions >= 0.25).all() and (fractions <= 1).all()
    assert attrs["patch_size_level0"] == round(512 * 0.5 / 0.499) and attrs["read_size"] == 513
    assert (coords[:, 0] + attrs["patch_size_level0"] <= 2220).all()
    assert (coords[:, 1] + attrs["patch_size_level0"] <= 2967).all()
    for key in ("slide_id", "mpp", "mpp_source", "target_mpp", "patch_size", "level", "level_downsample",
                "overlap", "tissue", "schema_version", "slide_path", "slide_fingerprint", "params_digest"):
        assert key in attrs
    ndpi = store.attrs("ndpi_fluo")
    assert (ndpi["level"], ndpi["read_size"]) == (1, 561)  # 0.228 µm/px: level 1 (0.456) resized to 0.5
    qc = Image.open(tmp / "tiles" / "qc" / "svs.png")
    assert max(qc.size) > 500
    with open_slide(attrs["slide_path"]) as slide:  # the extractor's view: patches read from the attrs
        from slidemil.extract.slide import read_patch

        patch = read_patch(slide, *coords[0], attrs["level"], attrs["read_size"], attrs["patch_size"])
    assert patch.shape == (512, 512, 3) and patch.mean() < 235  # tissue, not glass


def test_resume_skips_unchanged_slides_and_redoes_changed_params(tmp_path, real_data):
    rows = [{"slide_id": "svs", "path": str(real_data / REAL["svs"]), "patient_id": "p", "mpp": ""}]
    _run(tmp_path, rows)
    group = tmp_path / "tiles" / "coords.zarr" / "svs" / "zarr.json"
    before = group.stat().st_mtime_ns
    _, manifest = _run(tmp_path, rows)
    assert manifest.loc["svs", "reason"].startswith("up to date (resumed)")
    assert group.stat().st_mtime_ns == before
    _, manifest = _run(tmp_path, rows, patch_size=256)
    assert not manifest.loc["svs", "reason"].startswith("up to date")
    assert json.loads(group.read_text())["attributes"]["patch_size"] == 256


def _tissue_tiff(path, rgb, **kwargs):
    tifffile.imwrite(path, rgb, tile=(256, 256), compression="jpeg", resolution=(20000, 20000),
                     resolutionunit="CENTIMETER", metadata=None, **kwargs)


def test_fault_cases_do_not_stop_the_cohort(tmp_path, real_data):
    with open_slide(real_data / REAL["svs"]) as slide:
        rgb = slide.read_region((200, 900), 0, (1536, 1536))
    _tissue_tiff(tmp_path / "good.tif", rgb)
    data = (tmp_path / "good.tif").read_bytes()
    (tmp_path / "truncated.tif").write_bytes(data[: len(data) // 2])
    with tifffile.TiffFile(tmp_path / "good.tif") as tif:
        offsets = tif.pages[0].dataoffsets
        offset, count = offsets[14], tif.pages[0].databytecounts[14]  # tile row 2, column 2
    broken = bytearray(data)
    noise = np.random.default_rng(0).integers(0, 256, count - count // 3, dtype=np.uint8)
    broken[offset + count // 3 : offset + count] = noise.tobytes()
    (tmp_path / "corrupt_tile.tif").write_bytes(bytes(broken))
    tifffile.imwrite(tmp_path / "blank.tif", np.full((1024, 1024, 3), 243, np.uint8), resolution=(20000, 20000),
                     resolutionunit="CENTIMETER", metadata=None)
    tifffile.imwrite(tmp_path / "nompp.tif", rgb, metadata=None)
    rows = [{"slide_id": n, "path": str(tmp_path / f"{n}.tif"), "patient_id": n, "mpp": ""}
            for n in ("good", "truncated", "corrupt_tile", "blank", "nompp")]
    rows.append({"slide_id": "override", "path": str(tmp_path / "nompp.tif"), "patient_id": "nompp", "mpp": "0.5"})
    code, manifest = _run(tmp_path, rows)
    assert code == 0
    assert manifest.loc["good", "status"] == "ok" and manifest.loc["good", "n_patches"] > 0
    assert manifest.loc["truncated", "status"] == "failed"
    assert "unreadable" in manifest.loc["truncated", "reason"] and "mpp" not in manifest.loc["truncated", "reason"]
    assert manifest.loc["corrupt_tile", "status"] == "ok"
    assert "unreadable region" in manifest.loc["corrupt_tile", "reason"]
    assert (manifest.loc["blank", "status"], manifest.loc["blank", "n_patches"]) == ("no_tissue", 0)
    assert manifest.loc["nompp", "status"] == "failed" and "add an `mpp` column" in manifest.loc["nompp", "reason"]
    assert (manifest.loc["override", "status"], manifest.loc["override", "mpp_source"]) == ("ok", "override")
    assert manifest.loc["override", "n_patches"] == manifest.loc["good", "n_patches"]
    code, _ = _run(tmp_path, rows, fail_if="any_failed")
    assert code == 1


def test_exit_status_when_no_slide_succeeds(tmp_path, real_data, caplog):
    rows = [{"slide_id": "a", "path": str(tmp_path / "gone.svs"), "patient_id": "a", "mpp": ""}]
    code, manifest = _run(tmp_path, rows)
    assert code == 1 and manifest.loc["a", "status"] == "failed"
    small = [{"slide_id": "s", "path": str(real_data / REAL["os1_crop"]), "patient_id": "s", "mpp": ""}]
    (tmp_path / "small").mkdir()
    (tmp_path / "empty").mkdir()
    with caplog.at_level(logging.ERROR, logger="slidemil.tile"):
        code, manifest = _run(tmp_path / "small", small)  # skipped only: within fail_if, but nothing to encode
    assert code == 1 and manifest.loc["s", "status"] == "skipped"
    assert any("no slide has patches to encode" in r.getMessage() for r in caplog.records)
    (tmp_path / "empty" / "cohort.csv").write_text("slide_id,path,patient_id\n")
    with pytest.raises(CohortError, match="lists no slides"):
        tile.run({"cohort": str(tmp_path / "empty" / "cohort.csv")}, argparse.Namespace(force=False))
    (tmp_path / "empty" / "cohort.csv").write_text("")
    with pytest.raises(CohortError, match="is empty: write a header row"):
        tile.run({"cohort": str(tmp_path / "empty" / "cohort.csv")}, argparse.Namespace(force=False))


@pytest.mark.parametrize(("key", "value", "must_be"), [
    ("overlap", 512, "smaller than patch_size"), ("fail_if", "sometimes", "a valid number.*'all_failed', 'any_failed' or 'never'"),
    ("min_tissue_fraction", 1.5, "less than or equal to 1"), ("mpp_range", [5.0, 1.0], "0 < low < high"),
    ("tissue", {"otsu": "yes"}, "boolean"), ("tissue", {"max_threshold": 5}, "at least min_threshold"),
])
def test_bad_params_are_named(key, value, must_be):
    with pytest.raises(ParamsError, match=f"'tile.{key}.*' must be .*{must_be}"):
        tile.run({"tile": {key: value}}, argparse.Namespace(force=False))


def test_whole_number_floats_are_integers_and_the_digest_is_stable():
    """`dvc exp run -S tile.patch_size=512.0` works, and the resume key of the default section is stable
    (pinned: it changed once, on purpose, when the optical-density tissue method and its keys came in)."""
    section = read_section({"tile": {"patch_size": 512.0}}, "tile", TileSection)
    assert section.patch_size == 512 and isinstance(section.patch_size, int)
    assert section.digest(None) == TileSection().digest(None) == "499e4e095106f3e1"


def test_a_cohort_copied_elsewhere_is_retiled_but_not_re_encoded(tmp_path, real_data, kit):
    """`cp` without -p gives every slide a new mtime and path: the tiles follow the new path (cheap), the
    features stay (same content fingerprint, same coords) and point heatmaps at the new file."""
    import shutil

    from slidemil.extract.store import open_features, store_path

    first = tmp_path / "disk1" / "slide.svs"
    first.parent.mkdir()
    shutil.copy(real_data / REAL["svs"], first)
    code, manifest = _run(tmp_path, [{"slide_id": "s1", "path": str(first), "patient_id": "p", "mpp": ""}])
    assert code == 0 and manifest.loc["s1", "status"] == "ok"
    assert kit.run_stage(tmp_path)[1].loc["s1", "reason"] == "computed"

    moved = tmp_path / "disk2" / "slide.svs"
    moved.parent.mkdir()
    shutil.copy(first, moved)  # new mtime
    first.unlink()
    code, manifest = _run(tmp_path, [{"slide_id": "s1", "path": str(moved), "patient_id": "p", "mpp": ""}])
    assert code == 0 and not manifest.loc["s1", "reason"].startswith("up to date")  # re-tiled: the path changed
    code, features = kit.run_stage(tmp_path)
    assert code == 0 and features.loc["s1", "reason"] == "up to date (not recomputed)"
    store = open_features(store_path(tmp_path / "features", "tiny_test"))
    assert store.attrs("s1")["slide_path"] == str(moved.resolve())
