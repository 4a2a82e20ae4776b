"""The labelled tissue evaluation set: images, hand-checked masks, and a simulated second scanner.

Used by tests/extract/test_tissue_eval.py and bench/tissue.py. Run as a script (from the repo root) it
rebuilds the masks ``<name>.mask.png`` of this folder (see PROVENANCE.md).

Each mask is a conservative manual rule chosen per image by looking at it — a threshold on one simple
feature (the darkest RGB channel for brightfield, the red channel for fluorescence), a morphological
cleanup, and hand-placed boxes erasing artefacts — never the detector under test. The overlays written
to --overlays were inspected one by one and the rules adjusted until the outline followed the tissue.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from scipy.ndimage import binary_fill_holes
from skimage.morphology import remove_small_objects

HERE = Path(__file__).resolve().parent
REAL = HERE.parents[2] / "demo" / "real"


def load(name: str) -> np.ndarray:
    """uint8 [h, w, 3] evaluation image ``name`` (see PROVENANCE.md for where each comes from)."""
    from slidemil.extract.slide import open_slide

    if name == "kidney-ihc":
        return np.asarray(Image.open(HERE / "kidney-ihc.png").convert("RGB"))
    if name == "colon-ihc":
        from skimage.data import immunohistochemistry

        return immunohistochemistry()
    path, downsample = SLIDES[name]
    with open_slide(REAL / path) as slide:
        return slide.read_overview(downsample).image


#: name → µm/px of the evaluation image (kidney-ihc and colon-ihc carry none: estimated, see PROVENANCE.md)
MPP = {"kidney-ihc": 16.0, "colon-ihc": 0.5, "cmu1-he": 0.499 * 8, "camelyon-he": 28.9685,
       "os1-he": 0.2271 * 2, "ndpi-fluorescence": 0.22818 * 16}

#: name → (file under demo/real, overview downsample)
SLIDES = {
    "cmu1-he": ("wsi-aperio-svs/CMU-1-Small-Region.svs", 8),
    "camelyon-he": ("wsi-dicom-camelyon/multiframe_camelyon_challenge_image.dcm", 1),
    "os1-he": ("wsi-ome-tiff-he/OS-1-detail.ome.tif", 2),
    "ndpi-fluorescence": ("wsi-hamamatsu-ndpi/test3-TRITC-2-560.ndpi", 16),
}


def _clean(mask: np.ndarray, close: int, min_px: int) -> np.ndarray:
    if close > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close, close))
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool)
    mask = remove_small_objects(mask, max_size=min_px)
    return binary_fill_holes(mask)


def hand_mask(name: str, rgb: np.ndarray) -> np.ndarray:
    """The manual rule for image ``name`` → bool [h, w]."""
    darkest = cv2.GaussianBlur(rgb.min(axis=2), (0, 0), 1.5)
    if name == "kidney-ihc":  # one TMA-core fragment; the grey smudges at the top are out-of-focus dirt
        return _clean(darkest < 225, 5, 200)
    if name == "colon-ihc":  # the whole field is tissue except the two white lumens
        return ~_clean(cv2.GaussianBlur(rgb.min(axis=2), (0, 0), 4) > 228, 1, 400)
    if name == "cmu1-he":
        return _clean(darkest < 228, 5, 150)  # two specks of dust (< 150 px) are not tissue
    if name == "camelyon-he":  # two lymph-node sections, their pale pink perinodal fat kept
        chroma = cv2.GaussianBlur(rgb.max(axis=2) - rgb.min(axis=2), (0, 0), 1.5)
        return _clean((darkest < 205) & (chroma > 15), 9, 150)  # grey dust specks dropped
    if name == "os1-he":  # a crop from inside the tissue
        return np.ones(rgb.shape[:2], dtype=bool)
    if name == "ndpi-fluorescence":
        red = cv2.GaussianBlur(rgb[..., 0], (0, 0), 3)
        return _clean(red > 12, 9, 200)
    raise KeyError(name)


NAMES = ["kidney-ihc", "colon-ihc", "cmu1-he", "camelyon-he", "os1-he", "ndpi-fluorescence"]


def load_mask(name: str) -> np.ndarray:
    """The stored hand-checked mask of ``name`` → bool [h, w]."""
    return np.asarray(Image.open(HERE / f"{name}.mask.png")).astype(bool)


def second_scanner(rgb: np.ndarray, seed: int = 0) -> np.ndarray:
    """The same section as another scanner might image it → uint8 [h, w, 3].

    A simulation, not a real scan (no real pair of scans of one section is available here): a cooler
    white balance (per-channel gains 0.92, 0.95, 1.0 on the transmittance, so glass turns bluish grey),
    a paler stain response (transmittance ** 0.75), 30 % less colour saturation, sensor noise (σ = 2
    levels) and JPEG quality 75 — the ways the two Ki67 scans of issue 16 differ.
    """
    transmittance = rgb.astype(np.float32) / 255.0
    out = np.asarray([0.92, 0.95, 1.0], np.float32) * transmittance**0.75  # (h, w, 3)
    grey = out.mean(axis=2, keepdims=True)
    out = grey + 0.7 * (out - grey)
    out = out * 255.0 + np.random.default_rng(seed).normal(0.0, 2.0, out.shape)
    out = np.clip(out, 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])
    return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1].copy()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks of one shape (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--overlays", type=Path, help="also write <name>-overlay.png here to inspect")
    args = parser.parse_args()
    for name in NAMES:
        rgb = load(name)
        mask = hand_mask(name, rgb)
        Image.fromarray(mask).save(HERE / f"{name}.mask.png", optimize=True)
        if args.overlays:
            args.overlays.mkdir(parents=True, exist_ok=True)
            overlay = rgb.copy()
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(overlay, contours, -1, (0, 255, 0) if "fluo" in name else (0, 160, 0), 1)
            Image.fromarray(overlay).save(args.overlays / f"{name}-overlay.png")
        print(f"{name}: {rgb.shape[1]}x{rgb.shape[0]} px, tissue {mask.mean():.3f}")


if __name__ == "__main__":
    main()
