"""Inputs every evaluation stage shares (train, probe, zeroshot): the splits, the feature store and
their provenance, loaded once and checked against each other by the leakage guard."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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
    inputs: dict[str, tuple[str, str]] = field(default_factory=dict)  # MLflow datasets: {context: (path, digest)}
    targets: dict[str, Any] = field(default_factory=dict)  # survival (time, event) | regression value | class index
    members: dict[str, list[str]] = field(default_factory=dict)  # patient level: patient_id → its slide_ids

    def slides(self) -> list[str]:
        """Every unit (slide; at ``task.level: patient`` the patient) in any part of any fold, sorted."""
        return sorted({sid for f in self.splits["folds"] for part in ("train", "val", "test") for sid in f[part]})

    def load(self, unit: str) -> tuple[Any, Any]:
        """Patch features ``[N, D]`` and level-0 coords ``[N, 2]`` of a unit: one slide, or at patient level
        all slides of the patient concatenated (slide_id order) into one bag."""
        import numpy as np

        if not self.members:
            return self.store.load(unit)
        parts = [self.store.load(sid) for sid in self.members[unit]]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def load_features(self, unit: str) -> Any:
        """Patch features ``[N, D]`` of a unit (as :meth:`load`, without reading the coords)."""
        import numpy as np

        if not self.members:
            return self.store.load_features(unit)
        return np.concatenate([self.store.load_features(sid) for sid in self.members[unit]])


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
    labels = {sid: index[name] for sid, name in splits["labels"].items()}
    kind = (splits.get("task") or {}).get("type", "classification")
    raw = splits.get("targets") or {}
    targets = {sid: (v["time"], v["event"]) if kind == "survival" else v for sid, v in raw.items()} \
        if kind != "classification" else dict(labels)
    data = MethodData(splits=splits, store=store, classes=classes, labels=labels,
                      patients=dict(splits["patients"]), tags={}, targets=targets)
    data.tags = provenance_tags(
        weights_sha256=store.weights_sha256,
        features_digest=json_digest({sid: store.attrs(sid) for sid in data.slides()}),
        splits_digest=file_digest(splits_path),
        encoder_id=store.encoder_id,
    )
    data.inputs = {"features": (str(features), data.tags["features.digest"]),
                   "splits": (str(splits_path), data.tags["splits.digest"])}
    if (splits.get("task") or {}).get("level", "slide") == "patient":
        to_patient_level(data)
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


def to_patient_level(data: MethodData) -> None:
    """Make patients the units of ``data`` (``task.level: patient``): folds list patient IDs, every patient's
    slides form one bag (:meth:`MethodData.load`), labels and targets are the patient's (its first slide's: the
    split checked that a patient's slides agree, or took the patient's most common label)."""
    members: dict[str, list[str]] = {}
    for sid in data.slides():
        members.setdefault(data.patients[sid], []).append(sid)
    folds = [{**f, **{part: sorted({data.patients[s] for s in f[part]}) for part in ("train", "val", "test")}}
             for f in data.splits["folds"]]
    first = {pid: sids[0] for pid, sids in members.items()}
    data.splits = {**data.splits, "folds": folds}
    data.labels = {pid: data.labels[sid] for pid, sid in first.items()}
    data.targets = {pid: data.targets[sid] for pid, sid in first.items()}
    data.patients = {pid: pid for pid in members}
    data.members = members
