"""Pooling a bag of patch features into one slide embedding."""

from __future__ import annotations

import numpy as np

POOLINGS = ("mean", "max", "mean+max")


def pool_bag(features: np.ndarray, pooling: str = "mean") -> np.ndarray:
    """Pool patch features ``[N, D]`` into a slide embedding.

    ``mean`` → ``[D]``, ``max`` → ``[D]`` (per feature), ``mean+max`` → ``[2D]`` (concatenated).
    An ROI / tile dataset is a bag of one patch, whose embedding is the patch feature itself.

    Raises:
        ValueError: empty bag or unknown pooling.
    """
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"need a non-empty bag of patch features [N, D], got shape {features.shape}")
    x = features.astype(np.float64, copy=False)
    if pooling == "mean":
        return x.mean(axis=0)
    if pooling == "max":
        return x.max(axis=0)
    if pooling == "mean+max":
        return np.concatenate([x.mean(axis=0), x.max(axis=0)])
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
