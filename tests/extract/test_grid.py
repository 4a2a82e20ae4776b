"""Patch grid arithmetic: border policy at k·P and k·P ± 1, overlap, tissue fractions."""

import numpy as np
import pytest

from slidemil.extract.grid import grid_coords, select_patches, tissue_fractions


@pytest.mark.parametrize(("size", "columns"), [(4 * 512, 4), (4 * 512 - 1, 3), (4 * 512 + 1, 4), (511, 0), (512, 1)])
def test_patches_crossing_the_border_are_dropped(size, columns):
    coords = grid_coords(size, 3 * 512, 512, 512)
    assert len(coords) == columns * 3
    if columns:
        assert coords[:, 0].max() + 512 <= size
        assert sorted(set(coords[:, 0].tolist())) == [512 * i for i in range(columns)]


def test_overlap_stride():
    coords = grid_coords(1024, 512, 512, 256)
    assert coords[:, 0].tolist() == [0, 256, 512]
    assert coords.dtype == np.int64 and coords.shape == (3, 2)


def test_tissue_fraction_from_a_half_covered_mask():
    mask = np.zeros((64, 64), dtype=bool)
    mask[:, :32] = True  # left half tissue; 16 level-0 px per mask px
    coords = grid_coords(1024, 1024, 256, 256)
    fractions = tissue_fractions(coords, 256, mask, 16.0)
    by_x = {int(x): float(f) for (x, _), f in zip(coords, fractions, strict=True)}
    assert by_x[0] == 1.0 and by_x[256] == 1.0 and by_x[512] == 0.0
    straddling = tissue_fractions(np.array([[384, 0]]), 256, mask, 16.0)
    assert straddling[0] == pytest.approx(0.5)


def test_select_patches_keeps_threshold_and_never_empty_patches():
    coords = np.array([[0, 0], [1, 0], [2, 0]])
    kept, fractions = select_patches(coords, np.array([0.0, 0.25, 0.9], dtype=np.float32), 0.25)
    assert kept[:, 0].tolist() == [1, 2]
    assert len(select_patches(coords, np.zeros(3, np.float32), 0.0)[0]) == 0
