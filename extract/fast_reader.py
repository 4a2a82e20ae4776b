"""Fast region reads from JPEG-tiled TIFF/SVS levels: decode the stored JPEG tiles directly.

OpenSlide's ``read_region`` spends most of its ~5 ms per 512-px patch outside JPEG decoding (cairo
compositing, ARGB conversion, its tile cache). Reading the tile bytes at the offsets tifffile reports and
decoding them with libjpeg-turbo (``imagecodecs.jpeg8_decode``, the decoder tifffile itself uses) gives the
same pixels for ~1 ms. Aperio tiles are RGB-encoded JPEGs that carry the shared JPEGTables in the TIFF tag
and no colour-transform marker: the decoder must be told the TIFF photometric (RGB) or it would apply a
YCbCr conversion. (simplejpeg cannot be told that, which is why it is not used here.)

Pixels equal OpenSlide's bit for bit (tests/extract/test_fast_reader.py, real SVS and generic TIFF): both
use libjpeg-turbo's accurate integer IDCT and fancy upsampling. The fast path is taken only where that holds:
OpenSlide vendors ``aperio`` and ``generic-tiff``, tiled 8-bit 3-sample JPEG levels, and level-0
coordinates that map to whole pixels of the level (OpenSlide interpolates fractional positions). Anything
else goes through ``Slide.read_region``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FAST_VENDORS = ("aperio", "generic-tiff")
_JPEG = 7
_PHOTOMETRIC_RGB = 2
_TILE_CACHE = 32  # decoded tiles kept per reader: neighbouring patches share edge tiles


@dataclass(frozen=True)
class _Level:
    width: int
    height: int
    downsample: float
    tile_w: int
    tile_h: int
    tiles_across: int
    offsets: tuple[int, ...]
    bytecounts: tuple[int, ...]
    tables: bytes | None
    colorspace: str | None


class JpegTileReader:
    """Reads regions of a slide's JPEG-tiled levels from the stored tiles (one instance per thread).

    Build it with :func:`open_jpeg_tiles`. ``read`` returns uint8 [h, w, 3] RGB, white outside the image,
    identical to ``Slide.read_region`` (OpenSlide backend) for the same request.
    """

    def __init__(self, path: Path, levels: dict[int, _Level]) -> None:
        self.path = path
        self._levels = levels
        self._fd = os.open(path, os.O_RDONLY)
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def can_read(self, x: int, y: int, level: int) -> bool:
        """Whether (x, y) level-0 px at ``level`` can be served from the tiles (whole level pixels)."""
        lv = self._levels.get(level)
        if lv is None:
            return False
        lx, ly = x / lv.downsample, y / lv.downsample
        return lx == int(lx) and ly == int(ly)

    def read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        """Region of ``w`` x ``h`` px at ``level`` from level-0 (x, y) → uint8 [h, w, 3] RGB.

        Raises:
            ValueError: the request is not servable (check ``can_read`` first).
            RuntimeError / imagecodecs errors: a tile cannot be decoded (corrupt data).
        """
        if not self.can_read(x, y, level):
            raise ValueError(f"{self.path}: level {level} at ({x}, {y}) is not on the JPEG-tile fast path")
        lv = self._levels[level]
        lx, ly = int(x / lv.downsample), int(y / lv.downsample)
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        x0, y0 = max(lx, 0), max(ly, 0)  # clip to the image; the rest stays white
        x1, y1 = min(lx + w, lv.width), min(ly + h, lv.height)
        if x0 >= x1 or y0 >= y1:
            return out
        for row in range(y0 // lv.tile_h, (y1 - 1) // lv.tile_h + 1):
            for col in range(x0 // lv.tile_w, (x1 - 1) // lv.tile_w + 1):
                tile = self._tile(level, lv, row * lv.tiles_across + col)
                tx, ty = col * lv.tile_w, row * lv.tile_h
                ax0, ay0 = max(x0, tx), max(y0, ty)
                ax1, ay1 = min(x1, tx + lv.tile_w), min(y1, ty + lv.tile_h)
                out[ay0 - ly : ay1 - ly, ax0 - lx : ax1 - lx] = tile[ay0 - ty : ay1 - ty, ax0 - tx : ax1 - tx, :3]
        return out

    def _tile(self, level: int, lv: _Level, index: int) -> np.ndarray:
        import imagecodecs

        key = (level, index)
        tile = self._cache.get(key)
        if tile is not None:
            self._cache.move_to_end(key)
            return tile
        nbytes = lv.bytecounts[index]
        if nbytes == 0:
            raise RuntimeError(f"{self.path}: level {level} tile {index} is empty (no data stored)")
        data = os.pread(self._fd, nbytes, lv.offsets[index])
        tile = imagecodecs.jpeg8_decode(data, tables=lv.tables, colorspace=lv.colorspace)
        if tile.ndim != 3 or tile.shape[0] < lv.tile_h or tile.shape[1] < lv.tile_w:
            raise RuntimeError(f"{self.path}: level {level} tile {index} decoded to shape {tile.shape}")
        self._cache[key] = tile
        if len(self._cache) > _TILE_CACHE:
            self._cache.popitem(last=False)
        return tile

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._cache.clear()


def open_jpeg_tiles(slide) -> JpegTileReader | None:
    """A fast reader for the JPEG-tiled levels of ``slide`` (an ``extract.slide.Slide``), or None.

    None when the slide is not read by OpenSlide as ``aperio``/``generic-tiff`` or has no tiled JPEG level
    that tifffile can map to an OpenSlide level (same width and height).
    """
    if slide.backend != "openslide" or slide.properties.get("openslide.vendor") not in FAST_VENDORS:
        return None
    import tifffile

    try:
        with tifffile.TiffFile(str(slide.path)) as tif:
            pages = [tif.pages[i] for i in range(len(tif.pages))]
            by_size = {}
            for page in pages:
                if _is_plain_jpeg_tiled(page):
                    by_size.setdefault((page.imagewidth, page.imagelength), page)
            levels = {}
            for index, (dims, ds) in enumerate(zip(slide.level_dimensions, slide.level_downsamples, strict=True)):
                page = by_size.get(tuple(dims))
                if page is not None:
                    levels[index] = _describe_level(page, float(ds))
    except (tifffile.TiffFileError, OSError, ValueError, IndexError):
        return None
    return JpegTileReader(Path(slide.path), levels) if levels else None


def _is_plain_jpeg_tiled(page) -> bool:
    return (
        getattr(page, "is_tiled", False)
        and page.compression == _JPEG
        and page.samplesperpixel == 3
        and page.bitspersample == 8
        and page.planarconfig == 1
        and page.imagedepth == 1
    )


def _describe_level(page, downsample: float) -> _Level:
    tables = page.jpegtables
    return _Level(
        width=page.imagewidth,
        height=page.imagelength,
        downsample=downsample,
        tile_w=page.tilewidth,
        tile_h=page.tilelength,
        tiles_across=-(-page.imagewidth // page.tilewidth),
        offsets=tuple(int(o) for o in page.dataoffsets),
        bytecounts=tuple(int(b) for b in page.databytecounts),
        tables=bytes(tables) if tables is not None else None,
        colorspace="RGB" if page.photometric == _PHOTOMETRIC_RGB else None,
    )
