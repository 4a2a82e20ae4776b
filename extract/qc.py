"""QC image of a tiled slide: the overview with the tissue contour and the kept patch grid drawn on it."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

TISSUE_COLOR = (0, 200, 0)  # RGB green contour
PATCH_COLOR = (30, 60, 255)  # RGB blue patch outlines
UNREADABLE_COLOR = (255, 0, 0)  # RGB red: regions that could not be decoded


#: A pyramid level is read as it is (no resize) when its overview's longer side is between qc_size / 2 and
#: 1.1 x qc_size; the coarsest such level is taken. Reading and PNG-encoding cost grow with the pixels, and a
#: small slide's QC then comes from a reduced level rather than from level 0.
_LEVEL_LARGER = 1.1
_LEVEL_SMALLER = 2.0


def overview_downsample(level_downsamples: Sequence[float], dimensions: tuple[int, int], qc_size: int,
                        max_downsample: float) -> float:
    """Level-0 px per overview px of the QC overview (which the tissue mask is also made from).

    The target is ``max(dimensions) / qc_size``, capped at ``max_downsample`` (the mask's downsample: the mask
    is never made from a coarser image). The coarsest pyramid level whose overview's longer side is within
    ``qc_size / 2`` … ``1.1 x qc_size`` px (a slide smaller than ``qc_size``: half its size … its size; never
    coarser than ``max_downsample``) is used as it is: a
    plain read of that level, no resize. Otherwise the target itself (the finest level above it is read and
    area-resized, as ``Slide.read_overview`` does).

    Args:
        level_downsamples: the slide's levels, level-0 px per level px.
        dimensions: (W, H) level-0 px.
        qc_size: longest side of the QC image wanted, px.
        max_downsample: the tissue mask's downsample (level-0 px per mask px).

    Returns:
        the overview downsample (≥ 1).
    """
    cap = max(1.0, max_downsample)
    target = min(max(1.0, max(dimensions) / qc_size), cap)
    near = [float(d) for d in level_downsamples if target / _LEVEL_LARGER <= d <= min(target * _LEVEL_SMALLER, cap)]
    return max(near) if near else target


def draw_qc(overview: np.ndarray, downsample: float, mask: np.ndarray, coords: np.ndarray, patch_size_level0: int,
            unreadable: list[tuple[int, int, int, int]] | None = None) -> np.ndarray:
    """Draw tissue contour, patch squares and unreadable regions on a copy of the overview.

    Args:
        overview: uint8 [h, w, 3] RGB; ``downsample`` level-0 px per overview px.
        mask: bool [hm, wm] tissue mask (any resolution covering the same area; resized here).
        coords: int64 [N, 2] kept patches (x, y) level-0 px; ``patch_size_level0`` their side.
        unreadable: level-0 boxes (x, y, w, h) that could not be decoded.

    Returns:
        uint8 [h, w, 3] RGB.
    """
    image = np.ascontiguousarray(overview.copy())
    h, w = image.shape[:2]
    mask_up = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(mask_up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    thick = max(1, round(max(h, w) / 500))
    cv2.drawContours(image, contours, -1, TISSUE_COLOR, thick)
    side = patch_size_level0 / downsample
    for x, y in np.asarray(coords).reshape(-1, 2):
        x0, y0 = x / downsample, y / downsample
        cv2.rectangle(image, (round(x0), round(y0)), (round(x0 + side) - 1, round(y0 + side) - 1), PATCH_COLOR, 1)
    for x, y, bw, bh in unreadable or []:
        cv2.rectangle(image, (round(x / downsample), round(y / downsample)),
                      (round((x + bw) / downsample), round((y + bh) / downsample)), UNREADABLE_COLOR, thick)
    return image


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 [h, w, 3] image."""
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()
