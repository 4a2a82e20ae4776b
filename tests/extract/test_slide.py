"""Opening slides of every real format in demo/real and synthetic fault cases written with tifffile."""

from pathlib import Path

import numpy as np
import pytest
import tifffile

from slidemil.core.errors import SlideError
from slidemil.extract.slide import PatchReadError, open_slide, read_patch

SVS = "wsi-aperio-svs/CMU-1-Small-Region.svs"
PYRAMID = "wsi-derived-cmu1/CMU-1-Small-Region.pyramid.tiff"
OME_PYRAMID = "wsi-derived-cmu1/CMU-1-Small-Region.ome.tiff"
DICOM_SERIES = "wsi-derived-cmu1/dicom/1.2.826.0.1.3680043.8.498.9899136569992917906874156422226849724.dcm"


@pytest.mark.parametrize(
    ("relpath", "backend", "levels", "mpp", "source"),
    [
        (SVS, "openslide", 1, 0.499, "openslide"),
        ("wsi-hamamatsu-ndpi/test3-TRITC-2-560.ndpi", "openslide", 7, 0.22818, "openslide"),
        ("wsi-dicom-camelyon/multiframe_camelyon_challenge_image.dcm", "openslide", 1, 28.969, "openslide"),
        ("wsi-ome-tiff-he/OS-1-detail.ome.tif", "tifffile", 1, 0.2271, "ome"),
        (PYRAMID, "openslide", 4, 0.499, "openslide"),
        (OME_PYRAMID, "tifffile", 4, 0.499, "ome"),  # OpenSlide sees 1 level: SubIFDs
    ],
)
def test_real_slides_open_with_the_right_reader_levels_and_mpp(real_data, relpath, backend, levels, mpp, source):
    with open_slide(real_data / relpath) as slide:
        assert slide.backend == backend
        assert slide.level_count == levels
        assert slide.mpp == pytest.approx(mpp, rel=1e-3)
        assert slide.mpp_source == source
        patch = read_patch(slide, 100, 200, slide.level_count - 1, 40, 32)
        assert patch.shape == (32, 32, 3) and patch.dtype == np.uint8


def test_ome_pyramid_and_generic_tiff_give_the_same_pixels(real_data):
    with open_slide(real_data / OME_PYRAMID) as ome, open_slide(real_data / PYRAMID) as tif:
        assert ome.level_dimensions == tif.level_dimensions
        assert np.array_equal(ome.read_region((800, 1200), 0, (128, 128)), tif.read_region((800, 1200), 0, (128, 128)))
        a = ome.read_region((800, 1200), 2, (128, 128)).astype(int)
        b = tif.read_region((800, 1200), 2, (128, 128)).astype(int)
    assert np.abs(a - b).mean() < 8  # reduced levels were re-encoded separately (PROVENANCE.md)


def test_dicom_levels_with_wrong_colours_are_dropped(real_data):
    with open_slide(real_data / DICOM_SERIES) as slide:
        assert slide.dropped_levels == [1, 2, 3, 4]  # YCbCr frames labelled RGB in the converted series
        assert slide.level_count == 1
        thumb = slide.thumbnail(256).astype(int)
    with open_slide(real_data / PYRAMID) as reference:
        expected = reference.thumbnail(256).astype(int)
    assert np.abs(thumb.mean(axis=(0, 1)) - expected.mean(axis=(0, 1))).max() < 3


def test_plain_png_needs_an_mpp_override(real_data):
    png = real_data / "tiles-histolab-fixtures/tissue-level0-4302-10273-4814-10785.png"
    with pytest.raises(SlideError, match="add an `mpp` column"):
        open_slide(png)
    with open_slide(png, mpp_override=0.25) as slide:
        assert (slide.backend, slide.dimensions, slide.mpp_source) == ("image", (512, 512), "override")
        assert read_patch(slide, 0, 0, 0, 512, 256).shape == (256, 256, 3)


@pytest.fixture(scope="module")
def tissue_rgb(real_data) -> np.ndarray:
    """uint8 [1024, 1024, 3] real H&E pixels (CMU-1)."""
    with open_slide(real_data / SVS) as slide:
        return slide.read_region((600, 1000), 0, (1024, 1024))


def test_single_level_strip_tiff_resolution_in_inch(tmp_path, tissue_rgb):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, tissue_rgb, resolution=(25400 / 0.5, 25400 / 0.5), resolutionunit="INCH", metadata=None)
    with open_slide(path) as slide:
        assert slide.backend == "tifffile"  # OpenSlide refuses strip TIFFs
        assert (slide.mpp, slide.mpp_source) == (pytest.approx(0.5), "tiff")
        assert np.array_equal(slide.read_region((10, 20), 0, (64, 64)), tissue_rgb[20:84, 10:74])


def test_vendor_description_with_a_non_ascii_byte(tmp_path, tissue_rgb):
    path = tmp_path / "aperio.svs"
    description = b"Aperio Image Library v12.0.15 \r\n1024x1024 (256x256) JPEG/RGB Q=70|AppMag = 20|MPP = 0.4990|User = caf\xe9"
    tifffile.imwrite(path, tissue_rgb, tile=(256, 256), compression="jpeg", description=description, metadata=None)
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx(0.499)
        assert slide.properties["openslide.vendor"] == "aperio"


def test_region_outside_the_slide_is_white_and_budget_is_enforced(real_data):
    with open_slide(real_data / OME_PYRAMID, memory_budget_mb=1) as slide:
        outside = slide.read_region((2200, 2950), 0, (64, 64))
        assert outside[-10:, -10:].min() == 255
        with pytest.raises(SlideError, match="memory budget of 1 MB"):
            slide.read_region((0, 0), 0, (2048, 2048))
        assert slide.read_overview(8).image.shape == (371, 278, 3)  # streamed in blocks under the budget


def test_truncated_file_is_reported_unreadable_not_missing_metadata(tmp_path, tissue_rgb):
    whole = tmp_path / "whole.tif"
    tifffile.imwrite(whole, tissue_rgb, tile=(256, 256), compression="jpeg", resolution=(20000, 20000),
                     resolutionunit="CENTIMETER", metadata=None)
    data = whole.read_bytes()
    for cut in (len(data) // 2, 100):
        path = tmp_path / f"cut{cut}.tif"
        path.write_bytes(data[:cut])
        with pytest.raises(SlideError, match="unreadable") as info:
            with open_slide(path) as slide:
                slide.read_overview(8)
        assert "mpp" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(SlideError, match="not found"):
        open_slide(tmp_path / "nope.svs")


def _corrupt_tile(path: Path, index: int) -> None:
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[index], tif.pages[0].databytecounts[index]
    data = bytearray(path.read_bytes())
    data[offset + count // 3 : offset + count] = bytes(np.random.default_rng(0).integers(0, 256, count - count // 3,
                                                                                         dtype=np.uint8))
    path.write_bytes(bytes(data))


def test_corrupt_tile_raises_patch_read_error_and_reopen_recovers(tmp_path, tissue_rgb):
    path = tmp_path / "corrupt.tif"
    tifffile.imwrite(path, tissue_rgb, tile=(256, 256), compression="jpeg", resolution=(20000, 20000),
                     resolutionunit="CENTIMETER", metadata=None)
    _corrupt_tile(path, 5)  # row 1, column 1 of a 4x4 tile grid
    with open_slide(path) as slide:
        overview = slide.read_overview(4)
        assert overview.unreadable == [(256, 256, 256, 256)]
        with pytest.raises(PatchReadError) as info:
            read_patch(slide, 256, 256, 0, 256, 256)
        assert (info.value.x, info.value.y, info.value.level) == (256, 256, 0)
        slide.reopen()
        good = read_patch(slide, 512, 512, 0, 256, 256)
        assert np.abs(good.astype(int) - tissue_rgb[512:768, 512:768]).mean() < 8


@pytest.mark.parametrize("cut", [900_000, 1_276_500])  # before / inside the first image's tags (at byte 1275950)
def test_truncated_svs_is_unreadable_even_with_an_mpp_override(real_data, tmp_path, caplog, cut):
    path = tmp_path / "cut.svs"
    path.write_bytes((real_data / SVS).read_bytes()[:cut])
    for override in (None, 0.5):
        with pytest.raises(SlideError, match=r"unreadable \(truncated or corrupt file: .*offset") as info:
            open_slide(path, mpp_override=override)
        assert "mpp" not in str(info.value) and "IndexError" not in str(info.value)
    assert not [r for r in caplog.records if r.name.startswith("tifffile")]  # in the reason, not on the console
