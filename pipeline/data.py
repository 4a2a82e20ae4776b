"""Inputs every evaluation stage shares (train, probe, zeroshot): the splits, the feature store and
their provenance, loaded once and checked against each other by the leakage guard."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slidemil.core.provenance import file_digest
from slidemil.core.provenance import value_digest as json_digest
from slidemil.pipeline.tracking import provenance_tags


@dataclass
class MethodData:
    """Splits + feature store of one evaluation, with integer labels per slide."""

    splits: dict[str, Any]
    store: Any  # extract.store.FeatureStore
    classes: list[str]
    labels: dict[str, int]  # slide_id → class index
    patients: dict[str, str]  # slide_id → patient_id
    tags: dict[str, str]  # provenance tags for MLflow

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
        StaleInputError: the splits, features or tiles are unfinished or were made from other inputs
            than the current ones (the message names the stage to re-run).
        StoreError: store or splits missing/invalid. LeakageError: patient in two parts of a fold, or a
            split slide missing from the features.
    """
    from slidemil.extract.store import open_features
    from slidemil.splits.guard import check_splits
    from slidemil.splits.io import load_splits

    check_features_lineage(features, splits_path)
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
    return data


def check_features_lineage(features: str | Path, splits_path: str | Path) -> None:
    """Refuse splits, features manifest or tiles that are unfinished or stale, and a feature store other
    than the one the recorded extraction wrote (e.g. after ``extract.encoder`` changed).

    Raises:
        StaleInputError: naming the stage to re-run.
    """
    from slidemil.core import provenance
    from slidemil.core.errors import StaleInputError

    if not Path(splits_path).is_file():
        return  # load_splits names the missing file and the stage
    provenance.check_chain(splits_path, "split")
    entry = provenance.read_record(splits_path) or {}
    for name in entry.get("inputs", {}):
        upstream = provenance.read_record(name) if Path(name).is_file() else None
        store = (upstream or {}).get("inputs", {}).get("store")
        if store and Path(store) != Path(features).resolve():
            raise StaleInputError(f"the last `slidemil extract` wrote {store}, not {features}; re-run "
                                  "`slidemil extract` for the current encoder, then `slidemil split`")
