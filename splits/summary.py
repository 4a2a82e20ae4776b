"""Per-fold class counts of a splits document, and the folds whose test or val set lacks a class."""

from __future__ import annotations

from typing import Any

import pandas as pd

from slidemil.splits.io import PARTS


def fold_summary(splits: dict[str, Any]) -> pd.DataFrame:
    """One row per (repeat, fold, part): ``n_slides``, ``n_patients``, then ``<class>_slides`` and
    ``<class>_patients`` for each class, in class order."""
    labels, patients, classes = splits["labels"], splits["patients"], splits["classes"]
    rows = []
    for fold in splits["folds"]:
        for part in PARTS:
            sids = fold[part]
            row: dict[str, Any] = {"repeat": fold.get("repeat", 0), "fold": fold["fold"], "part": part,
                                   "n_slides": len(sids), "n_patients": len({patients[s] for s in sids})}
            for c in classes:
                of_class = [s for s in sids if labels[s] == c]
                row[f"{c}_slides"] = len(of_class)
                row[f"{c}_patients"] = len({patients[s] for s in of_class})
            rows.append(row)
    return pd.DataFrame(rows)


def missing_class_warnings(summary: pd.DataFrame, classes: list[str]) -> list[str]:
    """A message for each fold whose test or val set (when not empty) has no slide of some class."""
    messages = []
    checked = summary[summary["part"].isin(["test", "val"]) & (summary["n_slides"] > 0)]
    for row in checked.to_dict("records"):
        lacking = [c for c in classes if row[f"{c}_slides"] == 0]
        if lacking:
            messages.append(f"repeat {row['repeat']} fold {row['fold']}: {row['part']} set has no slide of class(es) "
                            f"{', '.join(lacking)}; its AUROC for them is undefined")
    return messages
