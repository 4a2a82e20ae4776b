"""The tissue outline of a slide in level-0 pixels, as the tile stage stored it."""

from __future__ import annotations

import numpy as np


def tissue_polygons(attrs: dict) -> list[np.ndarray] | None:
    """Outer boundaries of the slide's tissue regions, ``[M, 2]`` (x, y) level-0 px each, from the
    ``tissue_outline`` the tile stage traced on its own tissue mask (``extract.tissue.mask_outline``), so the
    outline is exactly the mask the patches were selected with.

    Args:
        attrs: the slide's tiles or feature store attrs.

    Returns:
        the polygons (possibly none: a slide without tissue), or None when the store predates the outline
        (tiled by slidemil < 0.3: re-run ``slidemil tile --force`` and ``slidemil extract``).
    """
    outline = attrs.get("tissue_outline")
    if outline is None:
        return None
    return [np.asarray(polygon, dtype=float).reshape(-1, 2) for polygon in outline]
