"""The committed demo cohort (demo/): slides OpenSlide reads as pyramids at their source's mpp, holding
their source's pixels, and a cohort table fit for patient-grouped 3-fold cross-validation."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from slidemil.splits.cohort import load_cohort

DEMO = Path(__file__).resolve().parents[1] / "demo"
SLIDES = sorted((DEMO / "slides").glob("*.tiff"))
MAX_BYTES = 8_000_000


def source_of(slide: openslide.OpenSlide) -> dict:
    """The JSON provenance record build_demo.py writes into level 0's ImageDescription."""
    return json.loads(slide.properties["tiff.ImageDescription"])


def source_mpp(real_data: Path, name: str) -> float:
    """Level-0 µm/px of a source file in demo/real, from its own metadata (OpenSlide, else OME-XML)."""
    path = next(real_data.rglob(name))
    try:
        with openslide.OpenSlide(path) as slide:
            return float(slide.properties[openslide.PROPERTY_NAME_MPP_X])
    except openslide.OpenSlideUnsupportedFormatError:
        with tifffile.TiffFile(path) as tif:
            return float(tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]["PhysicalSizeX"])


def source_pixels(real_data: Path, name: str) -> np.ndarray:
    """Level 0 of a source file in demo/real as uint8 RGB [H, W, 3]."""
    path = next(real_data.rglob(name))
    if path.suffix == ".svs":
        with openslide.OpenSlide(path) as slide:
            return np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
    return tifffile.imread(path)


def luminance_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the mean-over-channels of two equally shaped RGB images."""
    return float(np.corrcoef(a.mean(axis=2).ravel(), b.mean(axis=2).ravel())[0, 1])


def test_demo_has_enough_slides_within_the_size_budget():
    assert len(SLIDES) >= 12
    assert sum(p.stat().st_size for p in SLIDES) < MAX_BYTES


@pytest.mark.parametrize("path", SLIDES, ids=[p.stem for p in SLIDES])
def test_slide_is_a_generic_tiff_pyramid_at_its_source_mpp(path: Path, real_data: Path):
    with openslide.OpenSlide(path) as slide:
        assert slide.properties[openslide.PROPERTY_NAME_VENDOR] == "generic-tiff"
        assert slide.level_count > 1
        assert slide.level_downsamples[1] == pytest.approx(2.0, rel=0.01)
        expected = source_mpp(real_data, source_of(slide)["source"])
        for key in (openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_MPP_Y):
            assert float(slide.properties[key]) == pytest.approx(expected, rel=0.01)
        width, height = slide.dimensions
        # at least one 256-µm patch fits; at most ~1500 px at 0.5 µm/px, so the demo stays quick
        assert min(width, height) * expected >= 256 and max(width, height) * expected <= 768


def test_slides_hold_the_pixels_of_the_region_they_name(real_data: Path):
    sources: dict[str, np.ndarray] = {}
    for path in SLIDES:
        with openslide.OpenSlide(path) as slide:
            record = source_of(slide)
            pixels = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
        if record["source"] not in sources:
            sources[record["source"]] = source_pixels(real_data, record["source"])
        source = sources[record["source"]]
        if "canvas" in record:  # the whole source centred on glass
            x, y = record["x"], record["y"]
            inner = pixels[y : y + source.shape[0], x : x + source.shape[1]]
            assert luminance_correlation(inner, source) > 0.95, path.name
            glass = pixels[: y - 16].astype(int)  # above the tissue, clear of JPEG ringing at its edge
            assert np.abs(glass - record["glass"]).max() <= 8, path.name
            continue
        x, y, size = record["x"], record["y"], record["size"]
        region = np.rot90(source[y : y + size, x : x + size], record["rotation"])
        assert luminance_correlation(pixels, region) > 0.95, path.name
        unturned = source[y : y + size, x : x + size]
        if record["rotation"]:  # the record's rotation matters: unturned pixels do not match
            assert luminance_correlation(pixels, unturned) < 0.5, path.name


@pytest.fixture(scope="module")
def cohort():
    return load_cohort(DEMO / "cohort.csv")


def test_cohort_rows_are_unique_and_their_files_exist(cohort):
    assert cohort["slide_id"].is_unique
    missing = [p for p in cohort["path"] if not Path(p).is_file()]
    assert not missing
    listed = {Path(p).resolve() for p in cohort["path"]}
    assert {p.resolve() for p in SLIDES} <= listed  # every demo slide is in the table
    assert {"slide_id", "path", "patient_id", "label", "site"} <= set(cohort.columns)


def test_task_has_balanced_classes_and_patients_for_grouped_three_fold_cv(cohort):
    task = cohort[cohort["label"] != ""]
    per_class = task.groupby("label").agg(slides=("slide_id", "size"), patients=("patient_id", "nunique"))
    assert len(per_class) >= 2
    assert (per_class["patients"] >= 3).all()  # a test patient per class in each of 3 folds, plus validation
    assert per_class["slides"].max() - per_class["slides"].min() <= 2
    assert task["patient_id"].nunique() >= 10
    assert (task.groupby("patient_id")["label"].nunique() == 1).all()  # a patient has one label
    assert (task.groupby("patient_id").size() == 2).any()  # some patients own two slides
    assert len(task) >= 16


def test_unlabelled_rows_cover_the_vendor_formats(cohort):
    extra = cohort[cohort["label"] == ""]
    suffixes = {Path(p).suffix for p in extra["path"]}
    assert {".svs", ".ndpi", ".dcm", ".tif", ".tiff"} <= suffixes
    assert not set(extra["patient_id"]) & set(cohort.loc[cohort["label"] != "", "patient_id"])


def test_camelyon_row_is_far_too_coarse_for_the_demo_target(cohort):
    # The premise of its expected `failed` status: 29 µm/px cannot give 0.5 µm/px patches.
    path = cohort.loc[cohort["slide_id"] == "real-dicom-camelyon", "path"].item()
    with openslide.OpenSlide(path) as slide:
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) > 20 * 0.5


@pytest.mark.slow
def test_build_reproduces_the_committed_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    spec = importlib.util.spec_from_file_location("build_demo", DEMO / "build_demo.py")
    build = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "build_demo", build)  # dataclasses look their module up there
    spec.loader.exec_module(build)
    build.main(tmp_path)
    assert (tmp_path / "cohort.csv").read_text() == (DEMO / "cohort.csv").read_text()
    rebuilt = sorted((tmp_path / "slides").glob("*.tiff"))
    assert [p.name for p in rebuilt] == [p.name for p in SLIDES]
    for new, old in zip(rebuilt, SLIDES, strict=True):
        # pixels, not bytes: another libjpeg build may encode differently
        assert np.abs(tifffile.imread(new).astype(int) - tifffile.imread(old)).mean() < 1.0, new.name
