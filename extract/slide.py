"""Opening a whole-slide image and reading regions, patches and overviews from it.

``open_slide`` picks a reader: plain images (PNG/JPEG…) through Pillow; everything else through
OpenSlide (SVS, generic/pyramidal TIFF, NDPI, MRXS, DICOM WSI, Philips TIFF, Ventana BIF, Leica SCN);
TIFFs OpenSlide refuses (plain single-level or strip TIFF, some OME-TIFF) or under-reads (OME-TIFF
pyramids in SubIFDs, where OpenSlide sees level 0 only) through tifffile + Zarr. The level-0 mpp is
resolved by :func:`extract.mpp.resolve_mpp`.

Memory: ``read_region`` refuses a request larger than the slide's memory budget, and ``read_overview``
streams blocks of bounded size, so peak memory does not grow with the slide's area.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import openslide

from slidemil.core.errors import SlideError
from slidemil.extract.levels import best_level_for_downsample
from slidemil.extract.mpp import PLAUSIBLE_MPP, resolve_mpp
from slidemil.extract.slide_backends import (
    IMAGE_SUFFIXES,
    ImageBackend,
    OpenSlideBackend,
    TiffBackend,
    check_tiff,
)

log = logging.getLogger(__name__)

#: Errors the readers raise on damaged or truncated pixel data (OpenSlide, tifffile/imagecodecs, Pillow).
_READ_ERRORS: tuple[type[BaseException], ...] = (
    openslide.OpenSlideError, OSError, RuntimeError, ValueError, EOFError, KeyError,
)

#: Side (px) of the centre crop compared between levels, and the shift of a channel's mean (0–255)
#: above which a reduced level is considered wrongly decoded (resampling alone shifts it by < 1).
_CHECK_SIZE = 32
_LEVEL_MISMATCH = 10.0
#: Side (px at the read level) below which a failing overview block is recorded as unreadable.
_MIN_BLOCK = 256
#: Largest single block read by ``read_overview`` (bytes, RGBA), independent of the slide's size.
_OVERVIEW_BLOCK_BYTES = 4 * 2**20  # bounds the peak: RGBA from the reader + its RGB copy


class PatchReadError(SlideError):
    """Pixels at one location could not be decoded (corrupt or truncated tile inside a readable slide).

    Attributes: ``path``, ``x``, ``y`` (level-0 px), ``level``, ``size`` (w, h at ``level``). Callers drop
    that patch, record its coordinates, call ``Slide.reopen()`` and go on.
    """

    def __init__(self, path: Path, x: int, y: int, level: int, size: tuple[int, int], cause: str) -> None:
        super().__init__(
            f"{path}: cannot read region at level-0 ({x}, {y}), level {level}, size {size[0]}x{size[1]}: {cause}"
        )
        self.path, self.x, self.y, self.level, self.size = path, x, y, level, size


@dataclass
class Overview:
    """A downsampled view of a whole slide.

    Attributes:
        image: uint8 [h, w, 3] RGB; pixel (i, j) covers level-0 [j·downsample, (j+1)·downsample) in x.
        downsample: level-0 px per overview px (the same in x and y).
        unreadable: level-0 boxes (x, y, w, h) that could not be decoded and were filled with white.
    """

    image: np.ndarray
    downsample: float
    unreadable: list[tuple[int, int, int, int]] = field(default_factory=list)


class Slide:
    """An open slide: geometry, resolution and pixel access. Use as a context manager or call ``close``.

    Attributes: ``path``, ``backend`` ("openslide" | "tifffile" | "image"), ``dimensions`` (W, H level 0),
    ``level_count``, ``level_dimensions`` [(W, H)], ``level_downsamples`` [float], ``mpp`` (level-0 µm/px),
    ``mpp_source`` (``override`` | ``openslide`` | ``aperio`` | ``ome`` | ``tiff`` | ``dicom`` | …),
    ``mpp_note`` (why an override looks wrong; "" otherwise), ``properties`` (metadata, OpenSlide names), ``memory_budget_mb``.
    """

    def __init__(self, path: Path, reader, mpp_override: float | None, memory_budget_mb: float,
                 plausible_mpp: tuple[float, float]) -> None:
        self.path = path
        self._reader = reader
        self.backend: str = reader.name
        self.properties: dict[str, str] = reader.properties
        self.memory_budget_mb = memory_budget_mb
        self.dimensions: tuple[int, int] = reader.level_dimensions[0]
        self._last_error = ""  # the reader's message for the last region that could not be decoded
        try:
            resolved = resolve_mpp(self.properties, mpp_override, plausible_mpp)
        except SlideError as exc:
            raise SlideError(f"{path}: {exc}") from None
        self.mpp, self.mpp_source, self.mpp_note = resolved.mpp, resolved.source, resolved.note
        self._levels = self._consistent_levels()  # reader level of each of this slide's levels
        self.dropped_levels = [i for i in range(len(reader.level_dimensions)) if i not in self._levels]
        self.level_dimensions: list[tuple[int, int]] = [reader.level_dimensions[i] for i in self._levels]
        self.level_downsamples: list[float] = [reader.level_downsamples[i] for i in self._levels]
        self.level_count = len(self._levels)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Read ``size`` (w, h) px at ``level`` from level-0 ``location`` (x, y) → uint8 [h, w, 3] RGB.

        Outside the scanned area is white.

        Raises:
            SlideError: invalid level or size, or the read would allocate more than ``memory_budget_mb``.
            PatchReadError: the pixels there cannot be decoded (the reader may need ``reopen()``).
        """
        w, h = int(size[0]), int(size[1])
        if not 0 <= level < self.level_count:
            raise SlideError(f"{self.path}: level {level} does not exist (the slide has {self.level_count})")
        if w < 1 or h < 1:
            raise SlideError(f"{self.path}: region size must be positive, got {w}x{h}")
        needed_mb = w * h * 4 / 2**20  # RGBA from the reader
        if needed_mb > self.memory_budget_mb:
            raise SlideError(
                f"{self.path}: reading {w}x{h} px at level {level} needs {needed_mb:.0f} MB, over the "
                f"memory budget of {self.memory_budget_mb:g} MB; read smaller regions or raise tile.memory_budget_mb"
            )
        x, y = int(location[0]), int(location[1])
        try:
            return self._reader.read(x, y, self._levels[level], w, h)
        except _READ_ERRORS as exc:
            raise PatchReadError(self.path, x, y, level, (w, h), f"{type(exc).__name__}: {exc}") from exc

    def _consistent_levels(self) -> list[int]:
        """Reader levels whose pixels agree with the next finer kept level at the slide centre.

        Converted files sometimes carry reduced levels that decode wrongly (e.g. YCbCr JPEG frames
        labelled RGB in a DICOM series: every colour is off); such a level is dropped (logged) so level
        choice and overviews read from a finer, correct one. One small read per level.
        """
        reader = self._reader
        kept = [0]
        for level in range(1, len(reader.level_dimensions)):
            ref = kept[-1]
            ratio = reader.level_downsamples[level] / reader.level_downsamples[ref]
            size = max(4, min(_CHECK_SIZE, int(_CHECK_SIZE * 32 / ratio)))  # ref read ≤ 1024 px a side
            ref_size = max(1, round(size * ratio))
            x = max(0, self.dimensions[0] // 2 - round(size * reader.level_downsamples[level] / 2))
            y = max(0, self.dimensions[1] // 2 - round(size * reader.level_downsamples[level] / 2))
            try:
                coarse = reader.read(x, y, level, size, size).astype(np.int16)
                fine = resize(reader.read(x, y, ref, ref_size, ref_size), size, size).astype(np.int16)
            except _READ_ERRORS:
                self._reader.close()
                self._reader = reader = _open_reader(self.path, self.memory_budget_mb)
                kept.append(level)  # cannot tell here; damaged tiles are handled where they are read
                continue
            difference = float(np.abs((coarse - fine).reshape(-1, 3).mean(axis=0)).max())  # colour shift
            if difference > _LEVEL_MISMATCH:
                log.warning("%s: level %d disagrees in colour with level %d (mean shift %.0f/255); not used",
                            self.path, level, ref, difference)
            else:
                kept.append(level)
        return kept

    def read_overview(self, downsample: float) -> Overview:
        """Read the whole slide at ``downsample`` (level-0 px per output px, ≥ 1) in bounded blocks.

        Reads from the coarsest level that is still fine enough and area-resizes each block, so memory
        stays bounded whatever the slide's size. A block that fails is retried after ``reopen()`` in
        quarters; a small block that still fails is read from the next finer level (damaged reduced levels
        are common in converted files); what fails at level 0 too is white and listed in ``unreadable``.

        Raises:
            SlideError: nothing at all could be read (an unreadable or truncated file).
        """
        downsample = max(float(downsample), 1.0)
        w0, h0 = self.dimensions
        out_w, out_h = max(1, math.ceil(w0 / downsample)), max(1, math.ceil(h0 / downsample))
        level = best_level_for_downsample(self.level_downsamples, downsample)
        overview = Overview(np.full((out_h, out_w, 3), 255, dtype=np.uint8), downsample)
        n_ok = self._read_block(overview, level, 0, 0, out_w, out_h)
        if n_ok == 0:
            raise SlideError(f"{self.path}: unreadable (truncated or corrupt file: no region of the slide could be "
                             f"decoded, {len(overview.unreadable)} regions failed; last error: {self._last_error})")
        return overview

    def _read_block(self, overview: Overview, level: int, c: int, r: int, bw: int, bh: int) -> int:
        """Fill output block (column c, row r, bw x bh px) of ``overview`` from ``level``.

        Returns the number of blocks read; splits blocks larger than the block budget.
        """
        ds, lds = overview.downsample, self.level_downsamples[level]
        factor = ds / lds  # level px per output px
        lx0, ly0 = math.floor(c * factor), math.floor(r * factor)
        lw = max(1, math.ceil((c + bw) * factor) - lx0)
        lh = max(1, math.ceil((r + bh) * factor) - ly0)
        splittable = bw > 1 or bh > 1
        if lw * lh * 4 > min(_OVERVIEW_BLOCK_BYTES, self.memory_budget_mb * 2**20) and splittable:
            return self._read_quarters(overview, level, c, r, bw, bh)
        try:
            pixels = self.read_region((round(lx0 * lds), round(ly0 * lds)), level, (lw, lh))
        except PatchReadError as exc:
            log.debug("%s", exc)
            self._last_error = str(exc.__cause__ or exc)
            self.reopen()
            if max(lw, lh) > _MIN_BLOCK and splittable:
                return self._read_quarters(overview, level, c, r, bw, bh)
            if level > 0:
                return self._read_block(overview, level - 1, c, r, bw, bh)
            overview.unreadable.append((round(c * ds), round(r * ds), math.ceil(bw * ds), math.ceil(bh * ds)))
            return 0
        overview.image[r : r + bh, c : c + bw] = resize(pixels, bw, bh)
        return 1

    def _read_quarters(self, overview: Overview, level: int, c: int, r: int, bw: int, bh: int) -> int:
        hw, hh = max(1, bw // 2), max(1, bh // 2)
        parts = [(c, r, hw, hh), (c + hw, r, bw - hw, hh), (c, r + hh, hw, bh - hh), (c + hw, r + hh, bw - hw, bh - hh)]
        return sum(self._read_block(overview, level, *p) for p in parts if p[2] > 0 and p[3] > 0)

    def thumbnail(self, max_size: int) -> np.ndarray:
        """The whole slide with its longer side ≤ ``max_size`` px → uint8 [h, w, 3] RGB (streamed)."""
        return self.read_overview(max(self.dimensions) / max_size).image

    def reopen(self) -> None:
        """Close and reopen the reader (an OpenSlide handle stays in an error state after a failed read)."""
        self._reader.close()
        self._reader = _open_reader(self.path, self.memory_budget_mb)

    def close(self) -> None:
        """Release the file handle."""
        self._reader.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Slide({self.path.name!r}, backend={self.backend}, {self.dimensions[0]}x{self.dimensions[1]}, "
                f"levels={self.level_count}, mpp={self.mpp:.4g} ({self.mpp_source}))")


def open_slide(path: str | Path, mpp_override: float | None = None, memory_budget_mb: float = 1024.0,
               plausible_mpp: tuple[float, float] = PLAUSIBLE_MPP) -> Slide:
    """Open a slide with the reader that fits it and resolve its level-0 mpp.

    Args:
        path: slide file (for a DICOM series, any one ``.dcm`` of it).
        mpp_override: µm/px from the cohort table (None/NaN: use the file's metadata).
        memory_budget_mb: the largest single read allowed (also caps plain images).
        plausible_mpp: (low, high) µm/px accepted from metadata.

    Raises:
        SlideError: file missing, no reader can open it (the libraries' own messages), or no usable mpp.
    """
    path = Path(path)
    if not path.is_file():
        raise SlideError(f"{path}: slide file not found; check the `path` column of the cohort table")
    reader = _open_reader(path, memory_budget_mb)
    try:
        return Slide(path, reader, mpp_override, memory_budget_mb, plausible_mpp)
    except SlideError:
        reader.close()
        raise


def read_patch(slide: Slide, x: int, y: int, level: int, read_size: int, patch_size: int) -> np.ndarray:
    """Read a ``read_size``² square at ``level`` from level-0 (x, y) and resize it to ``patch_size``².

    Returns uint8 [patch_size, patch_size, 3] RGB. Downscaling uses area averaging, upscaling bicubic.

    Raises:
        PatchReadError: the pixels cannot be decoded (drop the patch, ``slide.reopen()``, go on).
    """
    pixels = slide.read_region((x, y), level, (read_size, read_size))
    return resize(pixels, patch_size, patch_size)


def resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize uint8 [h, w, C] to [height, width, C]: area averaging to shrink, bicubic to enlarge."""
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    shrink = width * height < pixels.shape[0] * pixels.shape[1]
    return cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def _open_reader(path: Path, memory_budget_mb: float):
    """The reader for ``path``; collects every library's message when none can open it."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        try:
            return ImageBackend(path, max_pixels=int(memory_budget_mb * 2**20 / 4))
        except (OSError, ValueError) as exc:
            raise SlideError(f"{path}: unreadable image: {exc}") from exc

    tiff = check_tiff(path)
    if tiff is not None and tiff.damage:
        raise SlideError(f"{path}: unreadable (truncated or corrupt file: {tiff.damage})")
    errors: list[str] = []
    try:
        reader = OpenSlideBackend(path)
    except openslide.OpenSlideUnsupportedFormatError as exc:
        errors.append(f"openslide: {exc}")
    except openslide.OpenSlideError as exc:
        # OpenSlide recognised the format but the file is damaged: report that, not a fallback's complaint.
        raise SlideError(f"{path}: unreadable (truncated or corrupt file: OpenSlide: {exc})") from exc
    else:
        generic = reader.properties.get("openslide.vendor") == "generic-tiff"
        if not generic or tiff is None or tiff.levels <= len(reader.level_dimensions):
            return reader
        reader.close()  # OME-TIFF pyramid in SubIFDs: OpenSlide sees level 0 only
    if tiff is not None and tiff.error:  # a TIFF header that tifffile cannot follow: damaged, not exotic
        raise SlideError(f"{path}: unreadable (truncated or corrupt file: tifffile: {tiff.error})")
    try:
        return TiffBackend(path, memory_budget_mb)
    except Exception as exc:  # noqa: BLE001 — tifffile/zarr raise many types; the message is reported
        errors.append(f"tifffile: {type(exc).__name__}: {exc}")
    raise SlideError(f"{path}: unreadable: no reader can open this file ({'; '.join(errors)})")
