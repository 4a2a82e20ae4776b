"""The patch grid over a slide, in level-0 pixels, and each patch's tissue fraction (pure arithmetic).

Border policy: a patch must lie entirely inside the slide; patches that would cross the right or bottom
border are dropped (never padded), so a slide of width k·P + r (0 ≤ r < P) holds k columns at stride P.
"""

from __future__ import annotations

import cv2
import numpy as np


def grid_coords(width: int, height: int, patch_size_level0: int, stride_level0: int) -> np.ndarray:
    """Top-left corners (x, y) of all patches fully inside a ``width`` x ``height`` slide.

    Args:
        width, height: level-0 size of the slide (px).
        patch_size_level0: patch side in level-0 px.
        stride_level0: step between patches in level-0 px (< patch size means overlap).

    Returns:
        int64 [N, 2] (x, y), row-major (y, then x).

    Raises:
        ValueError: non-positive patch size or stride.
    """
    if patch_size_level0 < 1 or stride_level0 < 1:
        raise ValueError(f"patch size {patch_size_level0} and stride {stride_level0} must be ≥ 1 px")
    xs = np.arange(0, width - patch_size_level0 + 1, stride_level0, dtype=np.int64)
    ys = np.arange(0, height - patch_size_level0 + 1, stride_level0, dtype=np.int64)
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)


def tissue_fractions(coords: np.ndarray, patch_size_level0: int, mask: np.ndarray, downsample: float) -> np.ndarray:
    """Fraction of each patch's footprint that the tissue mask covers.

    Args:
        coords: int64 [N, 2] (x, y) level-0 top-left corners.
        patch_size_level0: patch side in level-0 px.
        mask: bool [h, w] tissue mask; mask pixel (i, j) covers level-0 [j·downsample, (j+1)·downsample).
        downsample: level-0 px per mask px.

    Returns:
        float32 [N] in [0, 1] (a footprint smaller than one mask pixel takes that pixel's value).
    """
    if len(coords) == 0:
        return np.zeros(0, dtype=np.float32)
    h, w = mask.shape
    # summed-area table [h + 1, w + 1] (zero first row and column), O(1) per patch; OpenCV's is ~10x numpy's
    integral = cv2.integral(mask.astype(np.uint8), sdepth=cv2.CV_64F)  # float64: exact counts below 2^53
    x0 = np.clip(np.round(coords[:, 0] / downsample).astype(np.int64), 0, w - 1)
    y0 = np.clip(np.round(coords[:, 1] / downsample).astype(np.int64), 0, h - 1)
    x1 = np.clip(np.round((coords[:, 0] + patch_size_level0) / downsample).astype(np.int64), x0 + 1, w)
    y1 = np.clip(np.round((coords[:, 1] + patch_size_level0) / downsample).astype(np.int64), y0 + 1, h)
    covered = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return (covered / ((x1 - x0) * (y1 - y0))).astype(np.float32)


def select_patches(coords: np.ndarray, fractions: np.ndarray, min_tissue_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Keep patches whose tissue fraction is ≥ ``min_tissue_fraction`` and > 0 → (coords [M, 2], fractions [M])."""
    keep = (fractions >= min_tissue_fraction) & (fractions > 0)
    return coords[keep], fractions[keep]
