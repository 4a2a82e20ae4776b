"""`tile` fails early and loudly (issue 15, class 5): a typo'd label column stops it before any work,
too many failed slides fail the stage with per-status counts, an empty slide names the filter's parameter,
and a level that cannot be decoded is reported at tile time."""

import argparse
import logging

import pandas as pd
import pytest
import tifffile
import yaml

from slidemil.extract.slide import PatchReadError, Slide, open_slide
from slidemil.extract.tiles import open_tiles
from slidemil.pipeline import cli
from slidemil.pipeline.preflight import failure_verdict
from slidemil.pipeline.stages import tile


def _tissue_tiff(path, rgb):
    tifffile.imwrite(path, rgb, tile=(256, 256), compression="jpeg", resolution=(20000, 20000),
                     resolutionunit="CENTIMETER", metadata=None)


@pytest.fixture
def good_slide(tmp_path, real_data):
    with open_slide(real_data / "wsi-aperio-svs/CMU-1-Small-Region.svs") as slide:
        rgb = slide.read_region((200, 900), 0, (1536, 1536))
    _tissue_tiff(tmp_path / "good.tif", rgb)
    return tmp_path / "good.tif"


def _run(tmp_path, rows, **tile_params):
    cohort = tmp_path / "cohort.csv"
    pd.DataFrame(rows).to_csv(cohort, index=False)
    params = {"cohort": str(cohort), "tile": {"output": str(tmp_path / "tiles"), **tile_params}}
    code = tile.run(params, argparse.Namespace(force=False))
    return code, open_tiles(tmp_path / "tiles").manifest().set_index("slide_id")


def test_verdict_counts_and_fraction():
    assert failure_verdict({"ok": 1, "failed": 3}, 0.5, "tile.fail_if") == (
        True, "slides: 3 failed, 1 ok; 3/4 failed, exceeds tile.fail_if=0.5")
    assert failure_verdict({"ok": 2, "failed": 2, "skipped": 5}, 0.5, "tile.fail_if")[0] is False
    assert failure_verdict({"ok": 1, "failed": 3}, "all_failed", "tile.fail_if")[0] is False
    assert failure_verdict({"ok": 3, "failed": 1}, "any_failed", "extract.fail_if")[0] is True


def test_three_of_four_failed_fails_the_stage(tmp_path, good_slide, caplog):
    rows = [{"slide_id": "good", "path": str(good_slide), "patient_id": "g", "mpp": ""}]
    rows += [{"slide_id": f"gone{i}", "path": str(tmp_path / f"gone{i}.svs"), "patient_id": f"p{i}", "mpp": ""}
             for i in range(3)]
    with caplog.at_level(logging.INFO):
        code, manifest = _run(tmp_path, rows)
    assert code == 1 and manifest.loc["good", "status"] == "ok"
    assert "slides: 3 failed, 0 no_tissue, 1 ok, 0 skipped; 3/4 failed, exceeds tile.fail_if=0.5" in caplog.text
    assert _run(tmp_path, rows, fail_if="all_failed")[0] == 0


def test_empty_slide_names_the_filter_parameter(tmp_path, good_slide):
    tifffile.imwrite(tmp_path / "blank.tif", (tifffile.imread(good_slide) * 0 + 243), resolution=(20000, 20000),
                     resolutionunit="CENTIMETER", metadata=None)
    rows = [{"slide_id": n, "path": str(tmp_path / f"{n}.tif"), "patient_id": n, "mpp": ""} for n in ("good", "blank")]
    _, manifest = _run(tmp_path, rows)
    assert "tile.tissue.min_area_mm2=0.01" in manifest.loc["blank", "reason"]
    _, manifest = _run(tmp_path, rows, min_tissue_fraction=1.0, patch_size=1024)
    assert manifest.loc["good", "status"] == "no_tissue"
    assert "no patch has ≥ 100% tissue (tile.min_tissue_fraction=1.0" in manifest.loc["good", "reason"]


def test_unreadable_level_is_reported_at_tile_time(tmp_path, good_slide, monkeypatch):
    read = Slide.read_region

    def level0_patch_fails(self, location, level, size):
        if level == 0 and tuple(size) == (512, 512):
            raise PatchReadError(self.path, *location, level, size, "JPEG data corrupt")
        return read(self, location, level, size)

    monkeypatch.setattr(Slide, "read_region", level0_patch_fails)
    _, manifest = _run(tmp_path, [{"slide_id": "good", "path": str(good_slide), "patient_id": "g", "mpp": ""}])
    assert manifest.loc["good", "status"] == "failed"
    assert "level 0, size 512x512: JPEG data corrupt" in manifest.loc["good", "reason"]


def test_typo_in_label_column_stops_tile_before_any_work(tmp_path, good_slide, monkeypatch, caplog):
    pd.DataFrame([{"slide_id": "good", "path": str(good_slide), "label": "a"}]).to_csv(tmp_path / "cohort.csv",
                                                                                        index=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"cohort": "cohort.csv", "task": {"label": "lable"}}))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["tile"]) == 2
    assert "cohort.csv has no column 'lable' (task.label); its columns are slide_id, path, label" in caplog.text
    assert not (tmp_path / "data").exists()


def test_slide_rewritten_after_tiling_is_refused(tmp_path, good_slide):
    import os

    from slidemil.core.errors import StaleInputError
    from slidemil.core.provenance import check
    from slidemil.pipeline.preflight import check_slides_unchanged

    _, manifest = _run(tmp_path, [{"slide_id": "good", "path": str(good_slide), "patient_id": "g", "mpp": ""}])
    assert check(tmp_path / "tiles/manifest.csv", "tile")["complete"] is True  # tile recorded its output
    store = open_tiles(tmp_path / "tiles")
    check_slides_unchanged(store, ["good"])
    stat = good_slide.stat()
    os.utime(good_slide, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched (or copied): no change
    check_slides_unchanged(store, ["good"])
    content = bytearray(good_slide.read_bytes())
    content[-1] ^= 0xFF
    good_slide.write_bytes(content)  # the file rewritten later
    with pytest.raises(StaleInputError, match=r"slide files changed since they were tiled: good .*re-run `slidemil tile`"):
        check_slides_unchanged(store, ["good"])
