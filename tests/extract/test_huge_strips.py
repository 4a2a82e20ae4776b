"""A TIFF stored as one huge compressed strip: decoded once (shared by reader threads), patches exact, and
refused with the reason when one strip alone exceeds tile.memory_budget_mb (issue 15, class 3)."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tifffile

from slidemil.core.errors import SlideError
from slidemil.extract import slide_backends
from slidemil.extract.slide import open_slide


@pytest.fixture(scope="module")
def single_strip(tmp_path_factory):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8)  # 34 MB decoded, one zlib strip
    path = tmp_path_factory.mktemp("strip") / "strip.tif"
    tifffile.imwrite(path, pixels, rowsperstrip=3000, compression="zlib", photometric="rgb",
                     resolution=(20000, 20000), resolutionunit="CENTIMETER", metadata=None)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages[0].dataoffsets) == 1 and not tif.pages[0].is_tiled
    return path, pixels


def test_patches_exact_and_the_strip_decoded_once(single_strip):
    path, pixels = single_strip
    before = slide_backends.DECODED.decodes
    corners = [(x, y) for x in range(0, 3700, 700) for y in range(0, 2700, 900)] + [(3800, 2900)]
    with open_slide(path, memory_budget_mb=1024) as a, open_slide(path, memory_budget_mb=1024) as b:
        assert a.backend == "tifffile"

        def read(i):
            x, y = corners[i % len(corners)]
            return (x, y), (a if i % 2 else b).read_region((x, y), 0, (256, 256))

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(read, range(4 * len(corners))))
    assert slide_backends.DECODED.decodes == before + 1  # not once per patch, nor once per reader
    for (x, y), patch in results:
        expected = np.full((256, 256, 3), 255, np.uint8)  # white outside the image
        part = pixels[y : y + 256, x : x + 256]
        expected[: part.shape[0], : part.shape[1]] = part
        np.testing.assert_array_equal(patch, expected)
    assert slide_backends.DECODED._entries == {}  # freed with the last reader


def test_strip_over_the_memory_budget_is_refused_with_the_reason(single_strip):
    path, _ = single_strip
    with pytest.raises(SlideError, match=r"strips that each decode to 34 MB, over tile.memory_budget_mb=20; .*tiled"):
        open_slide(path, memory_budget_mb=20)
