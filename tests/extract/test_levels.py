"""Level choice by mpp (never by index): non-integer downsamples, missing 20x level, upsampling limit."""

import pytest

from slidemil.core.errors import SlideError
from slidemil.extract.levels import best_level_for_downsample, choose_level


def test_non_integer_downsamples_pick_the_level_at_the_target():
    choice = choose_level([1.0, 4.0003, 16.01, 64.08], mpp=0.25, target_mpp=1.0, patch_size=256)
    assert choice.level == 1
    assert choice.read_size == round(256 * 4 / 4.0003)
    assert choice.patch_size_level0 == 1024


def test_40x_pyramid_without_a_20x_level_reads_level_0_and_resizes():
    choice = choose_level([1.0, 4.0, 16.0], mpp=0.25, target_mpp=0.5, patch_size=512)
    assert (choice.level, choice.read_size, choice.patch_size_level0) == (0, 1024, 1024)


def test_ndpi_like_pyramid_chooses_by_mpp():
    choice = choose_level([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0], mpp=0.22818, target_mpp=0.5, patch_size=512)
    assert choice.level == 1
    assert choice.read_size == round(512 * 0.5 / 0.22818 / 2)
    assert choice.level_mpp == pytest.approx(0.45636)


def test_slightly_coarser_level_within_tolerance_counts_as_the_target():
    choice = choose_level([1.0, 2.0003], mpp=0.2501, target_mpp=0.5, patch_size=512, tolerance=0.05)
    assert choice.level == 1
    assert choice.read_size == 512


def test_single_level_and_tiny_last_level():
    assert choose_level([1.0], 0.499, 0.5, 512).level == 0
    assert choose_level([1.0, 2.0, 1024.0], 0.25, 64.0, 256).level == 1  # the 1024x level is too coarse


def test_target_much_finer_than_the_scan_is_refused_with_the_way_out():
    with pytest.raises(SlideError, match=r"finer than the scan \(28\.97 µm/px\).*target_mpp >= 26\.3"):
        choose_level([1.0], mpp=28.969, target_mpp=0.5, patch_size=512)


def test_small_upsampling_is_allowed():
    choice = choose_level([1.0], mpp=0.54, target_mpp=0.5, patch_size=512, max_upsample=0.1)
    assert choice.read_size == round(512 * 0.5 / 0.54)
    with pytest.raises(SlideError):
        choose_level([1.0], mpp=0.54, target_mpp=0.5, patch_size=512, max_upsample=0.05)


def test_best_level_for_overview():
    assert best_level_for_downsample([1.0, 2.0003, 4.0, 8.016], 16.0) == 3
    assert best_level_for_downsample([1.0, 4.0, 16.0], 3.9) == 0
