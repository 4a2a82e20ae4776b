"""Inputs every evaluation stage shares (train, probe, zeroshot): the splits, the feature store and
their provenance, loaded once and checked against each other by the leakage guard."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slidemil.pipeline.tracking import file_digest, json_digest, provenance_tags


@dataclass
class MethodData:
    """Splits + feature store of one evaluation, with integer labels per slide."""

    splits: dict[str, Any]
    store: Any  # extract.store.FeatureStore
    classes: list[str]
    labels: dict[str, int]  # slide_id → class index
    patients: dict[str, str]  # slide_id → patient_id
    tags: dict[str, str]  # provenance tags for MLflow
    inputs: dict[str, tuple[str, str]] = field(default_factory=dict)  # MLflow datasets: {context: (path, digest)}

    def slides(self) -> list[str]:
        """Every slide in any part of any fold, sorted."""
        return sorted({sid for f in self.splits["folds"] for part in ("train", "val", "test") for sid in f[part]})


def features_path(configured: str, params: Mapping[str, Any]) -> str:
    """The feature store to read: ``configured``, else ``<extract.output>/<extract.encoder>.zarr`` (as ``train``)."""
    if configured:
        return configured
    from slidemil.extract.store import store_path

    extract = params.get("extract") or {}
    return str(store_path(extract.get("output", "data/features"), str(extract.get("encoder", "conch_v1"))))


def load_method_data(features: str | Path, splits_path: str | Path) -> MethodData:
    """Open the feature store and the splits file and check them against each other.

    Raises:
        StoreError: store or splits missing/invalid. LeakageError: patient in two parts of a fold, or a
            split slide missing from the features.
    """
    from slidemil.extract.store import open_features
    from slidemil.splits.guard import check_splits
    from slidemil.splits.io import load_splits

    splits = load_splits(splits_path)
    store = open_features(features)
    check_splits(splits, set(store.slide_ids))
    classes = list(splits["classes"])
    index = {name: i for i, name in enumerate(classes)}
    data = MethodData(
        splits=splits,
        store=store,
        classes=classes,
        labels={sid: index[name] for sid, name in splits["labels"].items()},
        patients=dict(splits["patients"]),
        tags={},
    )
    data.tags = provenance_tags(
        weights_sha256=store.weights_sha256,
        features_digest=json_digest({sid: store.attrs(sid) for sid in data.slides()}),
        splits_digest=file_digest(splits_path),
        encoder_id=store.encoder_id,
    )
    data.inputs = {"features": (str(features), data.tags["features.digest"]),
                   "splits": (str(splits_path), data.tags["splits.digest"])}
    return data
