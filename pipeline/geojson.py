"""GeoJSON of patches and tissue in level-0 pixels, the layout QuPath imports (File › Import objects).

QuPath (≥ 0.4) reads a ``FeatureCollection`` whose features carry ``properties.objectType``
(``detection`` for patches: light, thousands per slide; ``annotation`` for the tissue outline),
``properties.classification`` ``{name, color: [r, g, b]}`` and ``properties.measurements`` (a mapping of
name → number, shown in its measurement tables and usable as a colour map). Coordinates are level-0
pixels with y downwards, as in QuPath's image space. Polygons are closed (first point repeated).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

import numpy as np

#: colours of the first classes (matplotlib's tab10), RGB 0–255
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def patch_collection(
    coords: np.ndarray,
    patch_size_level0: float,
    measurements: Mapping[str, np.ndarray],
    dimensions: Sequence[int] | None = None,
    classification: Sequence[str] | None = None,
    class_names: Sequence[str] = (),
) -> dict:
    """A FeatureCollection of patch squares as QuPath detections.

    Args:
        coords: ``[N, 2]`` top-left (x, y) in level-0 px; patch_size_level0: side in level-0 px.
        measurements: name → ``[N]`` values (e.g. ``attention percentile``, ``score dense``).
        dimensions: level-0 (width, height); squares are clipped to the slide.
        classification: ``[N]`` class name per patch (None: unclassified); class_names fix the colours' order.
    """
    coords = np.asarray(coords, dtype=float).reshape(-1, 2)
    x0, y0 = coords[:, 0], coords[:, 1]
    x1, y1 = x0 + patch_size_level0, y0 + patch_size_level0
    if dimensions is not None:
        width, height = float(dimensions[0]), float(dimensions[1])
        x0, x1 = np.clip(x0, 0, width), np.clip(x1, 0, width)
        y0, y1 = np.clip(y0, 0, height), np.clip(y1, 0, height)
    names = list(class_names) or sorted(set(classification or []))
    colours = {name: list(PALETTE[i % len(PALETTE)]) for i, name in enumerate(names)}
    values = {name: np.asarray(v, dtype=float).reshape(-1) for name, v in measurements.items()}
    features = []
    for i in range(len(coords)):
        ring = [[x0[i], y0[i]], [x1[i], y0[i]], [x1[i], y1[i]], [x0[i], y1[i]], [x0[i], y0[i]]]
        properties: dict = {"objectType": "detection", "isLocked": False,
                            "measurements": {name: _number(v[i]) for name, v in values.items()}}
        if classification is not None:
            properties["classification"] = {"name": str(classification[i]), "color": colours[classification[i]]}
        features.append({"type": "Feature", "id": str(uuid.UUID(int=i)),
                         "geometry": {"type": "Polygon", "coordinates": [_round(ring)]}, "properties": properties})
    return {"type": "FeatureCollection", "features": features}


def tissue_collection(polygons: Sequence[np.ndarray], name: str = "Tissue") -> dict:
    """A FeatureCollection of tissue outlines as QuPath annotations (one feature per connected region).

    Args:
        polygons: each ``[M, 2]`` (x, y) level-0 px of an outer boundary (closed here if it is not).
    """
    features = []
    for i, polygon in enumerate(polygons):
        ring = np.asarray(polygon, dtype=float).reshape(-1, 2).tolist()
        if len(ring) < 3:
            continue
        if ring[0] != ring[-1]:
            ring.append(ring[0])
        features.append({"type": "Feature", "id": str(uuid.UUID(int=i)),
                         "geometry": {"type": "Polygon", "coordinates": [_round(ring)]},
                         "properties": {"objectType": "annotation", "isLocked": True,
                                        "classification": {"name": name, "color": [0, 160, 0]}}})
    return {"type": "FeatureCollection", "features": features}


def _round(ring: list) -> list:
    return [[round(float(x), 2), round(float(y), 2)] for x, y in ring]


def _number(value: float) -> float | None:
    return round(float(value), 6) if np.isfinite(value) else None
