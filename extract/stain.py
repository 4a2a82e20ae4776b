"""Stain normalisation of uint8 patch batches on the encoder's device (optional, off by default).

Two methods through ``torchstain`` (torch tensors, so it runs on the GPU before the encoder):
- ``macenko``: stain vectors and concentrations by SVD of the optical density (Macenko et al., "A method
  for normalizing histology slides for quantitative analysis", ISBI 2009), mapped onto the reference's;
- ``reinhard``: per-channel mean and standard deviation in LAB matched to the reference's (Reinhard et
  al., "Color transfer between images", IEEE CG&A 2001).

The reference is a patch image (PNG/JPEG/TIFF) or a whole slide; for a slide the tissue pixels of its
overview (``extract.tissue``) are the reference. The method and the reference file's sha256 go into the
feature store's provenance (``preprocess.stain_norm``), so changing either re-extracts.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from slidemil.core.errors import ParamsError, SlideError
from slidemil.core.hashing import file_sha256

METHODS = ("none", "macenko", "reinhard")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
REFERENCE_MPP = 2.0  # µm/px of a reference slide's overview: stain statistics, not morphology, matter


def reference_pixels(path: Path) -> np.ndarray:
    """RGB pixels of the reference → uint8 [H, W, 3].

    A PNG/JPEG is used whole; a slide (any format ``extract.slide`` opens) gives its tissue pixels at
    ~2 µm/px as a one-row image [1, N, 3] (glass would bias the LAB statistics and the OD histogram).

    Raises:
        ParamsError: the file does not exist; SlideError: it cannot be read, or a slide has no tissue.
    """
    if not path.is_file():
        raise ParamsError(f"extract.stain_norm.reference: {path} not found; give a patch image or a slide")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        from PIL import Image

        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    from slidemil.extract.sections import TissueSection
    from slidemil.extract.slide import open_slide
    from slidemil.extract.tissue import tissue_mask

    with open_slide(path) as slide:
        downsample = max(1.0, REFERENCE_MPP / slide.mpp)
        rgb = slide.read_overview(downsample).image
        mask = tissue_mask(rgb, slide.mpp * downsample, TissueSection()).mask
    if not mask.any():
        raise SlideError(f"extract.stain_norm.reference: no tissue found on {path}")
    return rgb[mask][None]  # (1, N, 3)


class StainNormalizer:
    """Maps uint8 RGB patches [B, H, W, 3] to the reference's stain, on their device.

    Args:
        method: ``macenko`` or ``reinhard``.
        reference: uint8 [H, W, 3] reference pixels (:func:`reference_pixels`).
        reference_sha256: digest of the reference file (recorded, not checked).
        reference_path: for the provenance (the file name: the digest, not the location, identifies it).

    A patch Macenko cannot decompose (glass only: too few stained pixels for the SVD) is passed through
    unchanged; ``passed_through`` counts them.
    """

    def __init__(self, method: str, reference: np.ndarray, reference_sha256: str, reference_path: str = "") -> None:
        import torchstain

        if method not in ("macenko", "reinhard"):
            raise ParamsError(f"extract.stain_norm.method must be macenko or reinhard here, got {method!r}")
        self.method = method
        self.reference_sha256 = reference_sha256
        self.reference_path = reference_path
        self.passed_through = 0
        self._library = f"torchstain {version('torchstain')}"  # its __version__ attribute lags the release
        if method == "macenko":
            self._normalizer = torchstain.normalizers.MacenkoNormalizer(backend="torch")
        else:
            self._normalizer = torchstain.normalizers.ReinhardNormalizer(backend="torch")
        self._normalizer.fit(torch.from_numpy(np.array(reference, dtype=np.uint8)).permute(2, 0, 1))  # (3, H, W)
        self._device: torch.device | None = None

    def describe(self) -> dict:
        """Provenance for the store attrs: method, reference path and sha256, library."""
        return {"method": self.method, "reference": self.reference_path,
                "reference_sha256": self.reference_sha256, "library": self._library}

    def __call__(self, patches: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] → uint8 [B, H, W, 3] on the same device."""
        self._to(patches.device)
        out = torch.empty_like(patches)
        for i, patch in enumerate(patches):
            out[i] = self._one(patch)
        return out

    def _one(self, patch: torch.Tensor) -> torch.Tensor:
        """One patch uint8 [H, W, 3] → uint8 [H, W, 3]."""
        image = patch.permute(2, 0, 1)  # (3, H, W)
        try:
            if self.method == "macenko":
                normed, _, _ = self._normalizer.normalize(I=image, stains=False)  # (H, W, 3) int32
            else:
                normed = self._normalizer.normalize(I=image)  # (H, W, 3) uint8
        except (RuntimeError, IndexError, ValueError):  # torch.linalg errors are RuntimeErrors
            self.passed_through += 1
            return patch
        if not torch.isfinite(normed.float()).all():
            self.passed_through += 1
            return patch
        return normed.clamp(0, 255).to(torch.uint8)

    def _to(self, device: torch.device) -> None:
        """Move the fitted reference statistics to ``device`` once (torchstain keeps them on the CPU)."""
        if self._device == device:
            return
        for name in ("HERef", "maxCRef", "target_means", "target_stds"):
            value = getattr(self._normalizer, name, None)
            if isinstance(value, torch.Tensor):
                setattr(self._normalizer, name, value.to(device))
        self._device = device


def create_stain_normalizer(method: str, reference: str) -> StainNormalizer | None:
    """The normaliser of ``extract.stain_norm`` (None for ``none``), fitted to ``reference``.

    Raises:
        ParamsError: a method other than none without a reference, or a missing reference file.
    """
    if method == "none":
        return None
    if not reference:
        raise ParamsError(f"extract.stain_norm.method is {method} but extract.stain_norm.reference is empty; "
                          "give a reference patch image or slide")
    path = Path(reference)
    return StainNormalizer(method, reference_pixels(path), file_sha256(path), path.name)
