"""QC overview resolution (extract.qc.overview_downsample) and the QC image drawn from it."""

import numpy as np
import pytest

from slidemil.extract.qc import draw_qc, encode_png, overview_downsample


@pytest.mark.parametrize(("levels", "dims", "mask_ds", "expected"), [
    ([1.0, 2.0], (1056, 1056), 2.06, 2.0),  # small 2-level slide: level 1 (528 px) as it is, not level 0
    ([1.0, 2.0], (1056, 1056), 1.5, 1.0),  # level 1 coarser than the mask allows: level 0 as it is (1056 px)
    ([1.0, 4.0], (1300, 1300), 8.0, 1300 / 1024),  # no level fits: level 0 resized to qc_size
    ([1.0], (2220, 2967), 5.8, 2967 / 1024),  # one level: read it and resize to qc_size
    ([1.0, 2.0, 4.0, 8.0], (2220, 2967), 5.8, 4.0),  # coarsest level within [qc/2, 1.1 qc] px: 742 px
    ([1.0, 4.0, 16.0, 64.0], (100_000, 80_000), 32.0, 32.0),  # a WSI: capped at the mask's downsample
    ([1.0, 4.0, 16.0], (900, 700), 16.0, 1.0),  # smaller than qc_size: level 0, never upsampled
    ([1.0, 2.0], (900, 700), 16.0, 2.0),  # … or a level down to half its size
])
def test_overview_downsample(levels, dims, mask_ds, expected):
    assert overview_downsample(levels, dims, 1024, mask_ds) == pytest.approx(expected)


def test_overview_size_within_bounds():
    levels = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    for side in range(300, 40_000, 397):
        wanted = min(side, 1024)
        size = side / overview_downsample(levels, (side, side), 1024, 64.0)
        assert wanted / 2 <= size <= 1.1 * wanted + 1


def test_qc_png_round_trip():
    import cv2

    overview = np.full((100, 120, 3), 240, np.uint8)
    mask = np.zeros((50, 60), bool)
    mask[10:40, 10:50] = True
    qc = draw_qc(overview, 4.0, mask, np.array([[80, 80]]), 64)
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(encode_png(qc), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(decoded, qc)
    assert (qc[20, 20:36] == (30, 60, 255)).all()  # the patch outline at (80, 80) / 4, blue
