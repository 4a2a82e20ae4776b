"""Slide readers behind :class:`extract.slide.Slide`: OpenSlide, tifffile (+Zarr) and plain images (Pillow).

Each backend exposes ``name``, ``level_dimensions`` [(W, H)], ``level_downsamples`` [float],
``properties`` (OpenSlide property names, text values), ``read(x0, y0, level, w, h) -> uint8 [h, w, 3]``
(location in level-0 px, size in px at ``level``; outside the image is white) and ``close()``.
Backends do not catch read errors: :class:`extract.slide.Slide` turns them into ``PatchReadError``.
"""

from __future__ import annotations

import logging
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

#: Extensions read with Pillow as single-level slides (ROI datasets; mpp from the cohort table).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})

_RESOLUTION_UNITS = {1: "none", 2: "inch", 3: "centimeter"}
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders


class _CaptureTifffile(logging.Filter):
    """Filter on tifffile's logger: inside :func:`tifffile_messages` (per thread) a record is collected and
    dropped; elsewhere it passes. A filter, not a toggled ``propagate``, because reader threads read
    concurrently and must not change shared logger state."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        stack = getattr(self.local, "stack", None)
        if not stack:
            return True
        if record.levelno >= logging.WARNING:
            stack[-1].append(record.getMessage())
        return False


_CAPTURE = _CaptureTifffile()
logging.getLogger("tifffile").addFilter(_CAPTURE)


@contextmanager
def tifffile_messages() -> Iterator[list[str]]:
    """Collect tifffile's warnings/errors (about a damaged file) into a list instead of printing them."""
    stack = _CAPTURE.local.__dict__.setdefault("stack", [])
    messages: list[str] = []
    stack.append(messages)
    try:
        yield messages
    finally:
        stack.pop()


@dataclass(frozen=True)
class TiffCheck:
    """What tifffile finds in a TIFF-family file (SVS, NDPI, OME-TIFF, …) before any pixels are read.

    Attributes:
        levels: pyramid levels of the first image series (0 when the file cannot be parsed).
        damage: why the file is truncated or corrupt ("" when its image data lies within the file).
        error: tifffile's message when it cannot parse the file at all ("" otherwise).
    """

    levels: int
    damage: str
    error: str


def check_tiff(path: Path) -> TiffCheck | None:
    """Parse the TIFF structure of ``path`` and compare the image data it claims with the file's size.

    A truncated file keeps the offsets and byte counts of strips/tiles past its end (or loses the tags
    that hold them); OpenSlide and tifffile would read those as missing (black or white) pixels instead
    of failing. Returns None for a file that is not a TIFF.
    """
    import tifffile

    with path.open("rb") as handle:
        if handle.read(4) not in _TIFF_MAGIC:
            return None
    size = path.stat().st_size
    with tifffile_messages() as messages:
        try:
            with tifffile.TiffFile(str(path)) as tif:
                if not tif.series:
                    return TiffCheck(0, "", "; ".join(messages[:3]) or "the file holds no image")
                levels = len(tif.series[0].levels)
                damage = _data_past_end(tif, size)
        except Exception as exc:  # noqa: BLE001 — tifffile raises many types on a damaged file; reported
            return TiffCheck(0, "", "; ".join([*messages[:3], f"{type(exc).__name__}: {exc}"]))
    if damage and messages:
        damage = f"{damage} (tifffile: {'; '.join(messages[:3])})"
    return TiffCheck(levels, damage, "")


def _data_past_end(tif, size: int) -> str:
    """Why the image data of ``tif``'s series does not fit in ``size`` bytes ("" when it does)."""
    for series in tif.series:
        for level in series.levels:
            for page in level.pages:
                if page is None or not hasattr(page, "dataoffsets"):
                    continue
                if not page.dataoffsets or not any(page.databytecounts):
                    return f"image {page.index} has no strip/tile offsets (its tags lie past the end of the file)"
                end = max(o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=True))
                if end > size:
                    return f"the file has {size} bytes but image {page.index} claims data up to byte {end}"
    return ""


def _white(h: int, w: int) -> np.ndarray:
    return np.full((h, w, 3), 255, dtype=np.uint8)


def _paste_clipped(source, x: int, y: int, w: int, h: int, width: int, height: int) -> np.ndarray:
    """Read ``source[y:y+h, x:x+w]`` (array-like [H, W, C]) with white where it falls outside."""
    out = _white(h, w)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x1 > x0 and y1 > y0:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = _to_rgb(np.asarray(source[y0:y1, x0:x1]))
    return out


def _to_rgb(pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB [h, w, 3] from gray [h, w], gray+alpha, RGB or RGBA (alpha composited on white)."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"pixel type {pixels.dtype} is not 8-bit; only 8-bit brightfield/RGB slides are supported")
    if pixels.ndim == 2:
        return np.repeat(pixels[..., None], 3, axis=2)
    if pixels.shape[2] == 4 and pixels[..., 3].min() == 255:  # opaque (inside the scan): no compositing
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGBA2RGB)
    if pixels.shape[2] in (2, 4):
        alpha = pixels[..., -1:].astype(np.uint16)
        color = pixels[..., :-1].astype(np.uint16)
        rgb = (color * alpha + 255 * (255 - alpha)) // 255
        return np.repeat(rgb, 3, axis=2).astype(np.uint8) if rgb.shape[2] == 1 else rgb.astype(np.uint8)
    return np.ascontiguousarray(pixels[..., :3])


class OpenSlideBackend:
    """Any format OpenSlide reads (SVS, generic/pyramidal TIFF, NDPI, MRXS, DICOM, Philips, BIF, SCN)."""

    name = "openslide"

    def __init__(self, path: Path) -> None:
        import openslide

        self._slide = openslide.OpenSlide(str(path))
        self.level_dimensions = [tuple(map(int, d)) for d in self._slide.level_dimensions]
        self.level_downsamples = [float(d) for d in self._slide.level_downsamples]
        self.properties = dict(self._slide.properties)

    def read(self, x0: int, y0: int, level: int, w: int, h: int) -> np.ndarray:
        region = self._slide.read_region((x0, y0), level, (w, h))  # RGBA, transparent outside the scan
        return _to_rgb(np.asarray(region))

    def close(self) -> None:
        self._slide.close()


#: A strip decoding to more than this is "huge": decoding it for every patch would cost seconds per patch.
HUGE_STRIP_MB = 16.0


class _DecodedLevels:
    """Levels stored as huge strips, decoded once per process into memory-mapped arrays on local disk and
    shared by every reader (threads, reopened slides) of the same file; freed when the last reader closes.

    tifffile decodes a strip whole, so reading a 512-px patch from a 20,000 × 15,000 single-strip TIFF
    through its Zarr store decodes 900 MB each time, and once per reader thread at the same time. Here the
    strips are decoded one at a time into the map (peak memory: one decoded strip), then reads are slices.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple, list] = {}  # key → [array or None, readers, per-key lock]
        self.decodes = 0  # levels decoded in this process (tests check a level is decoded once)

    def acquire(self, key: tuple) -> None:
        with self._lock:
            entry = self._entries.setdefault(key, [None, 0, threading.Lock()])
            entry[1] += 1

    def release(self, key: tuple) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del self._entries[key]  # the map's file was unlinked at creation: the OS frees it

    def get(self, key: tuple, level) -> np.ndarray:
        """The decoded level (``tifffile`` level of the series), decoding it on first use."""
        import tempfile

        with self._lock:
            entry = self._entries[key]
        with entry[2]:  # one thread decodes; the others wait for it instead of decoding too
            if entry[0] is None:
                handle = tempfile.TemporaryFile(prefix="slidemil-strips-")
                decoded = np.memmap(handle, dtype=level.dtype, mode="w+", shape=level.shape)
                level.asarray(out=decoded)
                entry[0] = decoded
                self.decodes += 1
            return entry[0]


DECODED = _DecodedLevels()


def huge_strip_mb(page) -> float:
    """Decoded MB of one strip of a stripped (not tiled) TIFF page; 0 for tiled pages or small strips."""
    if getattr(page, "is_tiled", True):
        return 0.0
    mb = float(np.prod(page.chunks)) * page.dtype.itemsize / 2**20
    return mb if mb > HUGE_STRIP_MB else 0.0


class TiffBackend:
    """TIFFs OpenSlide refuses or under-reads: OME-TIFF with SubIFD pyramids, plain single-level TIFF.

    Regions are read lazily through tifffile's Zarr store, so only the tiles/strips touched are decoded.
    A level stored as huge strips (:data:`HUGE_STRIP_MB`) is decoded once into a shared memory-mapped
    array (:class:`_DecodedLevels`); a strip that alone decodes to more than ``memory_budget_mb`` is
    refused on open (ValueError saying how to convert the file).
    """

    name = "tifffile"

    def __init__(self, path: Path, memory_budget_mb: float = 1024.0) -> None:
        import tifffile
        import zarr

        with tifffile_messages():  # damage is found by check_tiff; keep tifffile's log off the console
            self._tif = tifffile.TiffFile(str(path))
        try:
            series = self._tif.series[0]
            axes = series.axes
            if axes not in ("YX", "YXS") or (axes == "YXS" and series.shape[-1] not in (3, 4)):
                raise ValueError(
                    f"image layout {axes} {series.shape} is not a 2-D gray or RGB(A) plane; "
                    "multi-channel/Z/T stacks are not supported"
                )
            store = zarr.open(series.aszarr(), mode="r")
            self._levels = [store[str(i)] for i in range(len(series.levels))] if hasattr(store, "keys") else [store]
            self.level_dimensions = [(int(a.shape[1]), int(a.shape[0])) for a in self._levels]
            w0, h0 = self.level_dimensions[0]
            self.level_downsamples = [(w0 / w + h0 / h) / 2 for w, h in self.level_dimensions]
            self.properties = _tiff_properties(self._tif, series)
            self._huge = _huge_levels(path, series, memory_budget_mb)
        except Exception:
            self._tif.close()
            raise
        self._series = series
        for key in self._huge.values():
            DECODED.acquire(key)

    def read(self, x0: int, y0: int, level: int, w: int, h: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        width, height = self.level_dimensions[level]
        with tifffile_messages() as messages:
            source = (DECODED.get(self._huge[level], self._series.levels[level]) if level in self._huge
                      else self._levels[level])
            pixels = _paste_clipped(source, round(x0 / ds), round(y0 / ds), w, h, width, height)
        if messages:  # tifffile logs, then fills with zeros, a strip/tile it cannot decode
            raise ValueError("; ".join(messages[:3]))
        return pixels

    def close(self) -> None:
        for key in self._huge.values():
            DECODED.release(key)
        self._huge = {}
        self._tif.close()


def _huge_levels(path: Path, series, memory_budget_mb: float) -> dict[int, tuple]:
    """``{level: cache key}`` of the series' levels stored as huge strips.

    Raises:
        ValueError: a strip decodes to more than ``memory_budget_mb`` (it must be decoded whole).
    """
    stat = path.stat()
    huge = {}
    for i, level in enumerate(series.levels):
        strip_mb = huge_strip_mb(level.keyframe)
        if not strip_mb:
            continue
        if strip_mb > memory_budget_mb:
            width, height = level.shape[1], level.shape[0]
            raise ValueError(
                f"level {i} ({width}x{height} px) is stored as strips that each decode to {strip_mb:.0f} MB, over "
                f"tile.memory_budget_mb={memory_budget_mb:g}; raise it, or convert the slide to a tiled pyramidal "
                "TIFF (e.g. vips tiffsave in.tif out.tif --tile --pyramid --compression jpeg)")
        huge[i] = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, i)
    return huge


class ImageBackend:
    """A plain image (PNG, JPEG, …) as a single-level slide; the whole image is decoded once on open."""

    name = "image"

    def __init__(self, path: Path, max_pixels: int) -> None:
        from PIL import Image

        with Image.open(path) as image:
            if image.width * image.height > max_pixels:
                raise ValueError(
                    f"{image.width}x{image.height} px exceeds the memory budget for a plain image; "
                    "convert it to a tiled pyramidal TIFF"
                )
            image.load()
            self._pixels = _to_rgb(np.asarray(image.convert("RGBA") if image.mode in ("P", "LA", "PA") else image))
        height, width = self._pixels.shape[:2]
        self.level_dimensions = [(width, height)]
        self.level_downsamples = [1.0]
        self.properties: dict[str, str] = {}

    def read(self, x0: int, y0: int, level: int, w: int, h: int) -> np.ndarray:
        width, height = self.level_dimensions[0]
        return _paste_clipped(self._pixels, x0, y0, w, h, width, height)

    def close(self) -> None:
        self._pixels = _white(0, 0)


def _tiff_properties(tif, series) -> dict[str, str]:
    """OpenSlide-style properties from the TIFF tags and OME-XML PhysicalSize."""
    page = series.levels[0].keyframe
    props: dict[str, str] = {}
    for axis in ("X", "Y"):
        tag = page.tags.get(f"{axis}Resolution")
        if tag is not None:
            num, den = tag.value
            props[f"tiff.{axis}Resolution"] = repr(num / den) if den else "0"
    unit = page.tags.get("ResolutionUnit")
    if unit is not None:
        props["tiff.ResolutionUnit"] = _RESOLUTION_UNITS.get(int(unit.value), str(int(unit.value)))
    props["tiff.ImageDescription"] = page.description or ""
    if tif.is_ome and tif.ome_metadata:
        props.update(_ome_physical_size(tif.ome_metadata))
    return props


def _ome_physical_size(xml: str) -> dict[str, str]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}
    pixels = next((el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"), None)
    if pixels is None:
        return {}
    props = {}
    for axis in ("X", "Y"):
        if f"PhysicalSize{axis}" in pixels.attrib:
            props[f"ome.PhysicalSize{axis}"] = pixels.attrib[f"PhysicalSize{axis}"]
            props[f"ome.PhysicalSize{axis}Unit"] = pixels.attrib.get(f"PhysicalSize{axis}Unit", "µm")
    return props
