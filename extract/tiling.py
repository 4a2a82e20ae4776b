"""Tiling one slide: find its tissue and lay the patch grid on it (the compute of ``slidemil tile``).

:func:`tile_slide` opens the slide, resolves its level-0 mpp (override first, then the file's metadata),
chooses the pyramid level for ``target_mpp``, segments the tissue on a streamed overview (~8 µm/px), keeps
the grid patches with at least ``min_tissue_fraction`` tissue and draws the QC image. It writes nothing:
the stage stores the result (``extract.tiles.write_slide_tiles``) and the QC PNG. The twin of
``extract.extraction`` (patches → features).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slidemil.core.hashing import file_fingerprint
from slidemil.extract.sections import TileSection


@dataclass(frozen=True)
class TileResult:
    """The tiles of one slide.

    Attributes:
        status: ``ok`` (≥ 1 patch), ``no_tissue`` (no patch has enough tissue) or ``skipped`` (the slide is
            smaller than one patch).
        reason: level chosen, patches kept, notes (dropped reader levels, unreadable regions, pen ink).
        coords: int64 [N, 2] level-0 (x, y) of the kept patches, row-major grid order.
        tissue_fraction: float32 [N] tissue fraction of each kept patch.
        attrs: the Zarr group attrs of the tiles store (DESIGN.md "Tiles"), ``slide_fingerprint`` and
            ``params_digest`` included.
        qc_png: PNG bytes of the overview with the tissue contour and the kept patches.
    """

    status: str
    reason: str
    coords: np.ndarray
    tissue_fraction: np.ndarray
    attrs: dict[str, Any]
    qc_png: bytes

    def row(self) -> dict[str, Any]:
        """The slide's manifest fields (status, reason, mpp, mpp_source, level, n_patches, tissue_mm2,
        tissue_method)."""
        a = self.attrs
        return {"status": self.status, "reason": self.reason, "mpp": a["mpp"], "mpp_source": a["mpp_source"],
                "level": a["level"], "n_patches": int(len(self.coords)), "tissue_mm2": round(a["tissue_mm2"], 4),
                "tissue_method": a["tissue"]["method_used"]}


def tile_slide(path: str | Path, config: TileSection, mpp_override: float | None = None) -> TileResult:
    """Tile one slide with the ``tile`` section ``config``.

    Args:
        path: the slide file (OpenSlide, tifffile or Pillow formats).
        config: the validated ``tile:`` section.
        mpp_override: level-0 µm/px from the cohort table (None: from the file's metadata).

    Raises:
        SlideError: unreadable file, no plausible mpp, no level for the target resolution, a read larger
            than ``memory_budget_mb``.
    """
    from slidemil.extract.grid import grid_coords, select_patches, tissue_fractions
    from slidemil.extract.levels import choose_level
    from slidemil.extract.qc import draw_qc, encode_png, overview_downsample
    from slidemil.extract.slide import open_slide, read_patch, resize
    from slidemil.extract.tissue import mask_area_mm2, mask_downsample, mask_outline, tissue_mask

    path = Path(path)
    fingerprint = file_fingerprint(path)
    tissue = config.tissue
    with open_slide(path, mpp_override, config.memory_budget_mb, tuple(config.mpp_range)) as slide:
        choice = choose_level(slide.level_downsamples, slide.mpp, config.target_mpp, config.patch_size,
                              config.level_tolerance, config.max_upsample)
        width, height = slide.dimensions
        mask_ds = mask_downsample(slide.dimensions, slide.mpp, tissue)
        overview = slide.read_overview(overview_downsample(slide.level_downsamples, slide.dimensions,
                                                           config.qc_size, mask_ds))
        mask_image = overview.image
        if overview.downsample < mask_ds:
            mask_image = resize(overview.image, math.ceil(width / mask_ds), math.ceil(height / mask_ds))
        segmentation = tissue_mask(mask_image, slide.mpp * mask_ds, tissue)
        stride = max(1, round((config.patch_size - config.overlap) * choice.target_downsample))
        candidates = grid_coords(width, height, choice.patch_size_level0, stride)
        fractions = tissue_fractions(candidates, choice.patch_size_level0, segmentation.mask, mask_ds)
        coords, fractions = select_patches(candidates, fractions, config.min_tissue_fraction)
        tissue_mm2 = mask_area_mm2(segmentation.mask, slide.mpp * mask_ds)
        notes = [f"level {choice.level} ({choice.level_mpp:.3g} µm/px), read {choice.read_size} px → "
                 f"{choice.patch_size} px; {len(coords)} of {len(candidates)} grid patches have ≥ "
                 f"{config.min_tissue_fraction:.0%} tissue ({segmentation.method} threshold "
                 f"{segmentation.threshold:.3g})"]
        if slide.mpp_note:
            notes.append(slide.mpp_note)
        if slide.dropped_levels:
            notes.append(f"reader levels {slide.dropped_levels} disagree in colour with level 0 and were not used")
        if overview.unreadable:
            notes.append(f"{len(overview.unreadable)} unreadable region(s) treated as background, level-0 "
                         f"(x, y, w, h): {overview.unreadable[:5]}")
        if segmentation.pen_fraction > 0.001:
            notes.append(f"pen ink removed from {segmentation.pen_fraction:.1%} of the overview")
        if len(coords):  # a level that cannot be decoded fails here, not first at extract
            read_patch(slide, int(coords[0][0]), int(coords[0][1]), choice.level, choice.read_size, choice.patch_size)
            status = "ok"
        elif not len(candidates):
            status = "skipped"
            notes.insert(0, f"the slide ({width}x{height} px) is smaller than one patch "
                            f"({choice.patch_size_level0} level-0 px); lower tile.patch_size or tile.target_mpp")
        else:
            status = "no_tissue"
            notes.insert(0, empty_reason(tissue_mm2, config, segmentation.method, segmentation.threshold))
        reason = "; ".join(notes)
        attrs = {
            "status": status, "reason": reason, "mpp": slide.mpp, "mpp_source": slide.mpp_source,
            "target_mpp": config.target_mpp, "patch_size": choice.patch_size,
            "patch_size_level0": choice.patch_size_level0, "level": choice.level,
            "level_downsample": choice.level_downsample, "read_size": choice.read_size,
            "overlap": config.overlap, "stride_level0": stride, "tissue_mm2": tissue_mm2,
            "tissue_outline": mask_outline(segmentation.mask, mask_ds),
            "tissue": {**config.tissue.model_dump(), "method_used": segmentation.method,
                       "threshold": segmentation.threshold, "mask_mpp_used": slide.mpp * mask_ds,
                       "background_rgb": segmentation.background and list(segmentation.background)},
            "slide_path": str(path.resolve()), "slide_fingerprint": fingerprint,
            "params_digest": config.digest(mpp_override),
            "backend": slide.backend, "dimensions": list(slide.dimensions),
        }
        qc = draw_qc(overview.image, overview.downsample, segmentation.mask, coords, choice.patch_size_level0,
                     overview.unreadable)
    return TileResult(status, reason, coords, fractions, attrs, encode_png(qc))


def empty_reason(tissue_mm2: float, config: TileSection, method: str, threshold: float) -> str:
    """Why tiling kept no patch, naming the filter and its parameter in ``config`` (the ``tile:`` section)."""
    if tissue_mm2 <= 0:
        return (f"no tissue: the {method} threshold {threshold:.3g} found none, or every region was smaller than "
                f"tile.tissue.min_area_mm2={config.tissue.min_area_mm2} mm² (lower it, or check tile.tissue.method)")
    return (f"no patch has ≥ {config.min_tissue_fraction:.0%} tissue (tile.min_tissue_fraction="
            f"{config.min_tissue_fraction}; {tissue_mm2:.3f} mm² of tissue found): lower it or tile.patch_size")
