"""JPEG-tile fast path: identical pixels to OpenSlide on real Aperio SVS and generic pyramid TIFF."""

import numpy as np
import pytest
import tifffile

from slidemil.extract.fast_reader import open_jpeg_tiles
from slidemil.extract.slide import open_slide

SVS = "wsi-aperio-svs/CMU-1-Small-Region.svs"
PYRAMID = "wsi-derived-cmu1/CMU-1-Small-Region.pyramid.tiff"


def _random_regions(slide, reader, level, n, size, seed=0):
    rng = np.random.default_rng(seed)
    w, h = slide.level_dimensions[level]
    ds = slide.level_downsamples[level]
    out = []
    while len(out) < n:
        lx, ly = rng.integers(-size // 2, [w - size // 2, h - size // 2])
        x, y = int(lx * ds), int(ly * ds)
        if reader.can_read(x, y, level):
            out.append((x, y))
    return out


@pytest.mark.parametrize("name", [SVS, PYRAMID])
def test_identical_to_openslide_on_real_slides(real_data, name):
    with open_slide(real_data / name) as slide:
        reader = open_jpeg_tiles(slide)
        assert reader is not None and 0 in reader._levels
        if name == SVS:  # Aperio: RGB-encoded JPEG tiles with shared JPEGTables, decoded without YCbCr transform
            assert reader._levels[0].colorspace == "RGB" and reader._levels[0].tables
        # regions crossing tile borders and the image border (white outside, as Slide.read_region)
        for x, y in _random_regions(slide, reader, 0, 12, 512) + [(-100, -50), (2000, 2800)]:
            fast = reader.read(x, y, 0, 512, 512)
            np.testing.assert_array_equal(fast, slide.read_region((x, y), 0, (512, 512)), err_msg=f"{name} {x},{y}")
        reader.close()


def test_fractional_level_position_is_left_to_openslide(real_data):
    with open_slide(real_data / PYRAMID) as slide:
        reader = open_jpeg_tiles(slide)
        assert slide.level_downsamples[1] != 2.0  # 1483/2967: OpenSlide interpolates such positions
        assert not reader.can_read(512, 512, 1)
        with pytest.raises(ValueError, match="fast path"):
            reader.read(512, 512, 1, 64, 64)
        reader.close()


def test_synthetic_tiled_tiff_with_partial_edge_tiles(tmp_path, real_data):
    """Real tissue re-written as a 700 x 500 JPEG-tiled TIFF with 240-px tiles (partial edge tiles)."""
    with open_slide(real_data / SVS) as slide:
        pixels = slide.read_region((300, 400), 0, (700, 500))
    path = tmp_path / "rgb.tiff"
    tifffile.imwrite(path, pixels, tile=(240, 240), compression="jpeg", photometric="rgb",
                     resolution=(20000, 20000), resolutionunit="CENTIMETER", metadata=None)
    with open_slide(path, mpp_override=0.5) as slide:
        reader = open_jpeg_tiles(slide)
        assert reader is not None
        for x, y in [(0, 0), (100, 37), (500, 300)]:
            np.testing.assert_array_equal(reader.read(x, y, 0, 256, 256), slide.read_region((x, y), 0, (256, 256)))
        reader.close()


def test_non_openslide_slides_have_no_fast_path(real_data):
    with open_slide(real_data / "wsi-ome-tiff-he/OS-1-detail.ome.tif", mpp_override=0.25) as slide:
        assert slide.backend != "openslide" or open_jpeg_tiles(slide) is None or \
            slide.properties.get("openslide.vendor") in ("aperio", "generic-tiff")
