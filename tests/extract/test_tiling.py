"""tile_slide: the pure tiling of one slide over the validated `tile:` section (the stage only stores it)."""

import numpy as np
import pytest

from slidemil.core.errors import ParamsError, SlideError
from slidemil.core.hashing import file_fingerprint
from slidemil.core.params import read_section
from slidemil.extract.sections import ExtractSection, TileSection
from slidemil.extract.tiling import tile_slide


def test_tile_slide_returns_everything_and_writes_nothing(svs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = TileSection(patch_size=256)
    result = tile_slide(svs, config)
    assert list(tmp_path.iterdir()) == []
    assert result.status == "ok" and result.coords.dtype == np.int64 and result.coords.shape[1] == 2
    assert len(result.coords) == len(result.tissue_fraction) == result.row()["n_patches"] > 0
    assert result.tissue_fraction.min() >= config.min_tissue_fraction
    attrs = result.attrs
    assert ((result.coords - result.coords.min(axis=0)) % attrs["stride_level0"] == 0).all()  # one grid
    assert attrs["params_digest"] == config.digest(None) and attrs["slide_fingerprint"] == file_fingerprint(svs)
    assert attrs["tissue"]["method_used"] == "od" and attrs["mpp_source"] != "override"
    assert result.qc_png[:8] == b"\x89PNG\r\n\x1a\n"
    overridden = tile_slide(svs, config, mpp_override=0.25)
    assert "overrides the file's 0.499 µm/px (openslide), 2.0x apart" in overridden.reason
    assert overridden.attrs["mpp"] == 0.25 and overridden.attrs["params_digest"] == config.digest(0.25)
    assert overridden.attrs["params_digest"] != attrs["params_digest"]


def test_tile_slide_raises_slide_errors(tmp_path):
    bad = tmp_path / "x.svs"
    bad.write_bytes(b"not a slide")
    with pytest.raises(SlideError):
        tile_slide(bad, TileSection())


@pytest.mark.parametrize(("values", "message"), [
    ({"batch_size": 0}, "'extract.batch_size' must be greater than or equal to 1 or be 'auto', got 0"),
    ({"scheduler": "yarn"}, "'extract.scheduler' must be none, local or a scheduler address like tcp://host:8786"),
    ({"device": "gpu"}, "'extract.device' must be auto, cpu, cuda or cuda:<index>, got 'gpu'"),
    ({"dtype": "int8"}, "'extract.dtype' must be 'float32' or 'float16', got 'int8'"),
    ({"encodr": "uni_v1"}, "unknown params key 'extract.encodr'; did you mean 'encoder'?"),
])
def test_extract_section_errors_name_the_key(values, message):
    with pytest.raises(ParamsError) as err:
        read_section({"extract": values}, "extract", ExtractSection)
    assert message in str(err.value)


def test_extract_section_accepts_whole_number_floats_and_auto():
    section = read_section({"extract": {"batch_size": 32.0, "num_workers": "auto"}}, "extract", ExtractSection)
    assert section.batch_size == 32 and isinstance(section.batch_size, int) and section.num_workers == "auto"


@pytest.mark.parametrize("name", ["wsi-aperio-svs/CMU-1-Small-Region.svs", "wsi-hamamatsu-ndpi/test3-TRITC-2-560.ndpi"])
def test_tissue_outline_is_the_mask_the_patches_came_from(real_data, name):
    """The stored outline (QuPath tissue annotations) traces the tiling's own mask: H&E and fluorescence."""
    import cv2

    from slidemil.pipeline.tissue_outline import tissue_polygons

    result = tile_slide(real_data / name, TileSection())
    polygons = tissue_polygons(result.attrs)
    assert polygons and all(p.shape[1] == 2 and len(p) >= 3 for p in polygons)
    mm2 = sum(cv2.contourArea(p.astype(np.float32)) for p in polygons) * (result.attrs["mpp"] / 1000) ** 2
    assert 0.9 * result.attrs["tissue_mm2"] <= mm2 <= 1.5 * result.attrs["tissue_mm2"]  # holes are not traced
    # every kept patch (>= 25 % tissue) lies >= ~25 % inside the outline (filled at 1/8 of level 0)
    width, height = result.attrs["dimensions"]
    filled = np.zeros((height // 8 + 1, width // 8 + 1), np.uint8)
    cv2.fillPoly(filled, [np.round(p / 8).astype(np.int32) for p in polygons], 1)
    side = result.attrs["patch_size_level0"] // 8
    inside = [filled[y // 8 : y // 8 + side, x // 8 : x // 8 + side].mean() for x, y in result.coords]
    assert min(inside) >= 0.2, inside
    assert tissue_polygons({"mpp": 0.5}) is None  # a store tiled before the outline was stored
