"""Tables of a deployment: fold and ensemble outputs per slide, training-cohort overlap (pure functions).

The outputs of a model depend on the task kind; :func:`kind_outputs` is the one place that knows it
(classification: one ``prob_<class>`` column per class and ``pred``; survival risk and regression values
plug in here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from slidemil.core.errors import SlidemilError


def kind_outputs(kind: str, outputs: np.ndarray, classes: Sequence[str]) -> dict[str, np.ndarray]:
    """Named output columns of ``n`` slides for a task kind.

    Args:
        kind: ``classification``; outputs: ``[n, C]`` class probabilities; classes: names in column order.

    Returns:
        ``{"prob_<class>": [n], …, "pred": [n] class names}``.

    Raises:
        SlidemilError: a kind this version cannot tabulate.
    """
    outputs = np.asarray(outputs, dtype=float)
    if kind == "classification":
        columns: dict[str, np.ndarray] = {f"prob_{c}": outputs[:, j] for j, c in enumerate(classes)}
        columns["pred"] = np.asarray(list(classes), dtype=object)[outputs.argmax(axis=1)] if len(outputs) else \
            np.zeros(0, dtype=object)
        return columns
    raise SlidemilError(f"task kind {kind!r} has no deploy outputs in this version")


def predictions_wide(
    head: str,
    slide_ids: Sequence[str],
    patients: Sequence[str],
    labels: Sequence[str],
    fold_names: Sequence[str],
    outputs: np.ndarray,
    classes: Sequence[str],
    kind: str = "classification",
) -> pd.DataFrame:
    """One row per slide of one head: each fold model's outputs (``<fold>/<column>``) and the ensemble mean.

    Args:
        slide_ids, patients, labels: ``(n,)`` (label "" when unknown); fold_names: ``(F,)``;
        outputs: ``[F, n, C]``; classes: output names.
    """
    table = pd.DataFrame({"slide_id": list(slide_ids), "patient_id": list(patients), "head": head,
                          "label": list(labels)})
    for name, fold_outputs in zip(fold_names, outputs, strict=True):
        for column, values in kind_outputs(kind, fold_outputs, classes).items():
            table[f"{name}/{column}"] = values
    for column, values in kind_outputs(kind, outputs.mean(axis=0), classes).items():
        table[column] = values
    return table


def training_overlap(cohort_patients: Mapping[str, str], training_patients: Sequence[str]) -> dict[str, list[str]]:
    """Patients of a new cohort who were in the training cohort: ``{patient_id: [slide_id, …]}``, sorted.

    Args:
        cohort_patients: new cohort's ``slide_id → patient_id``; training_patients: patient_ids of training.
    """
    known = set(training_patients)
    overlap: dict[str, list[str]] = {}
    for slide_id, patient in sorted(cohort_patients.items()):
        if patient in known:
            overlap.setdefault(patient, []).append(slide_id)
    return dict(sorted(overlap.items()))
