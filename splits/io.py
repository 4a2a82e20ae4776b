"""The splits file (``data/splits.json``): building, writing (atomic) and loading (validated).

Contract (DESIGN.md + interfaces.md)::

    {schema_version, label, classes, n_folds, seed, seeds, strategy,
     folds: [{fold, repeat, train, val, test}],      # slide_id lists
     excluded: {slide_id: reason},
     patients: {slide_id: patient_id}, labels: {slide_id: class name},
     task: {type, level, label, time, event},       # optional (absent: classification at slide level)
     targets: {slide_id: {time, event}} | {slide_id: value}}   # survival | regression only

For survival and regression, ``labels`` and ``classes`` hold the fold-assignment strata (e.g. ``event/t2``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from slidemil.core.atomic import write_json
from slidemil.core.errors import StoreError

SCHEMA_VERSION = 1
PARTS = ("train", "val", "test")
_REQUIRED = ("schema_version", "label", "classes", "n_folds", "seed", "strategy", "folds", "excluded",
             "patients", "labels")


def build_splits(label: str, classes: tuple[str, ...], seeds: tuple[int, ...], strategy: str,
                 folds: list[dict[str, Any]], excluded: dict[str, str], slides: pd.DataFrame,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Assemble the splits document; ``slides`` has ``slide_id``, ``patient_id``, ``label`` of the kept slides;
    ``extra`` adds keys (``task``, ``targets``)."""
    ordered = slides.sort_values("slide_id")
    return {**(extra or {}),
        "schema_version": SCHEMA_VERSION,
        "label": label,
        "classes": list(classes),
        "n_folds": max((f["fold"] for f in folds), default=-1) + 1,
        "seed": seeds[0],
        "seeds": list(seeds),
        "strategy": strategy,
        "folds": folds,
        "excluded": dict(sorted(excluded.items())),
        "patients": dict(zip(ordered["slide_id"], ordered["patient_id"], strict=True)),
        "labels": dict(zip(ordered["slide_id"], ordered["label"], strict=True)),
    }


def write_splits(path: str | Path, splits: dict[str, Any]) -> None:
    """Write the splits file atomically (a reader never sees half a file)."""
    write_json(path, splits)


def load_splits(path: str | Path) -> dict[str, Any]:
    """Read and validate ``data/splits.json``.

    Checks the structure only (keys, types, every fold slide known to ``patients`` and ``labels``,
    labels among ``classes``, in k-fold CV every slide in exactly one test set per repeat). Leakage
    between parts and agreement with a feature store: :func:`splits.guard.check_splits`.

    Raises:
        StoreError: file missing, not JSON, unknown ``schema_version``, malformed content; the message
            says to re-run ``slidemil split`` (``dvc repro split``).
    """
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"splits file {path} not found; run `slidemil split` (dvc repro split) first")
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise StoreError(f"{path} is not valid JSON ({exc}); re-run `slidemil split`") from exc
    problems = _problems(splits)
    if problems:
        raise StoreError(f"{path} is not a valid splits file: {'; '.join(problems[:5])}; re-run `slidemil split`")
    return splits


def _problems(splits: Any) -> list[str]:
    if not isinstance(splits, dict):
        return ["top level is not an object"]
    missing = [k for k in _REQUIRED if k not in splits]
    if missing:
        return [f"missing keys {missing}"]
    if splits["schema_version"] != SCHEMA_VERSION:
        return [f"schema_version {splits['schema_version']!r}, this slidemil reads {SCHEMA_VERSION}"]
    problems = []
    classes, labels, patients = splits["classes"], splits["labels"], splits["patients"]
    bad_labels = sorted({v for v in labels.values() if v not in classes})
    if bad_labels:
        problems.append(f"labels {bad_labels} not in classes {classes}")
    test_count: dict[tuple[int, str], int] = {}
    for i, fold in enumerate(splits["folds"]):
        if not isinstance(fold, dict) or any(not isinstance(fold.get(k), list) for k in PARTS):
            problems.append(f"folds[{i}] lacks a train/val/test list")
            continue
        for part in PARTS:
            unknown = [s for s in fold[part] if s not in labels or s not in patients]
            if unknown:
                problems.append(f"folds[{i}].{part} has slides without label/patient: {unknown[:5]}")
        for sid in fold["test"]:
            key = (fold.get("repeat", 0), sid)
            test_count[key] = test_count.get(key, 0) + 1
    kind = (splits.get("task") or {}).get("type", "classification")
    if kind != "classification":
        targets = splits.get("targets") or {}
        lacking = [s for s in labels if s not in targets]
        if lacking:
            problems.append(f"{kind} task: slides without a target: {lacking[:5]}")
    if splits["strategy"] == "kfold":
        repeats = {f.get("repeat", 0) for f in splits["folds"] if isinstance(f, dict)}
        off = sorted({sid for r in repeats for sid in labels if test_count.get((r, sid), 0) != 1})
        if off:
            problems.append(f"k-fold CV: slides not in exactly one test set per repeat: {off[:5]}")
    return problems


def read_manifest(path: str | Path) -> pd.DataFrame | None:
    """Read a tiles/features ``manifest.csv`` as text (``None`` if the file does not exist).

    Raises:
        StoreError: the file lacks a ``slide_id`` or ``status`` column.
    """
    path = Path(path)
    if not path.is_file():
        return None
    table = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    for column in ("slide_id", "status"):
        if column not in table.columns:
            raise StoreError(f"{path}: no {column!r} column; is it a slidemil manifest?")
    return table
