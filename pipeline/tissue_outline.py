"""The tissue outline of a slide in level-0 pixels, segmented again with the tiling's own tissue parameters."""

from __future__ import annotations

import numpy as np


def tissue_polygons(attrs: dict, min_points: int = 3) -> list[np.ndarray]:
    """Outer boundaries of the tissue regions of a slide, ``[M, 2]`` (x, y) level-0 px each.

    The mask is recomputed as the tile stage did (same :class:`extract.sections.TissueSection` from the
    slide's attrs, same mask resolution) and traced with OpenCV's ``findContours`` (outer contours).

    Args:
        attrs: the slide's store attrs (``slide_path``, ``mpp``, ``mpp_source``, ``tissue``).

    Raises:
        SlideError: the slide cannot be read.
    """
    import cv2

    from slidemil.extract.sections import TissueSection
    from slidemil.extract.slide import open_slide
    from slidemil.extract.tissue import mask_downsample, tissue_mask

    # the attrs hold the tiling's TissueSection and the segmentation's results (method_used, threshold, …)
    params = TissueSection(**{k: v for k, v in (attrs.get("tissue") or {}).items() if k in TissueSection.model_fields})
    override = attrs.get("mpp") if attrs.get("mpp_source") == "override" else None
    with open_slide(attrs["slide_path"], override) as slide:
        downsample = mask_downsample(slide.dimensions, slide.mpp, params)
        overview = slide.read_overview(downsample)
        mask = tissue_mask(overview.image, slide.mpp * overview.downsample, params).mask
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2).astype(float) * overview.downsample for c in contours if len(c) >= min_points]
