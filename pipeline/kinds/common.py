"""What the survival and regression kinds share: the fold summary and the files written at the end."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slidemil.core.atomic import write_csv
from slidemil.pipeline.metrics import summarize_folds

ID_COLUMNS = ("slide_id", "patient_id", "fold", "repeat")


def summarize(folds: Sequence[Mapping[str, Any]], ci: Mapping[str, tuple[float, float]] | None, primary: str,
              pooled: Mapping[str, float] | None = None) -> dict[str, float]:
    """Flat summary: ``<split>/<metric>_mean|_std`` over usable folds, ``test/<metric>_ci_low|_ci_high`` from
    ``ci``, ``test/pooled_<metric>`` from ``pooled``, ``test/n_usable_folds`` = folds with a finite
    ``primary`` metric, ``n_failed_folds``."""
    usable = [f for f in folds if f.get("status", "ok") == "ok"]
    splits = sorted({k.split("/", 1)[0] for f in usable for k in f if "/" in k}) or ["test"]
    summary: dict[str, float] = {}
    for split in splits:
        numeric = [{k: float(v) for k, v in f.items() if k.startswith(f"{split}/") and isinstance(v, int | float)}
                   for f in usable]
        summary.update(summarize_folds(numeric, split=split, ci=ci if split == "test" else None))
    finite = [f.get(f"test/{primary}") for f in usable]
    summary["test/n_usable_folds"] = int(sum(v is not None and np.isfinite(float(v)) for v in finite))
    for key, value in (pooled or {}).items():
        summary[f"test/pooled_{key}"] = float(value)
    summary["n_failed_folds"] = len(folds) - len(usable)
    return summary


def write_outputs(stage: str, method: str, predictions: pd.DataFrame, folds: Sequence[Mapping[str, Any]],
                  summary: Mapping[str, float], plots: Mapping[str, pd.DataFrame], headline: Sequence[str],
                  root: str | Path = ".") -> None:
    """Write ``predictions/<stage>@<method>.csv``, ``plots/<stage>@<method>/<name>.csv`` for each of ``plots``,
    and the headline metrics JSON + details JSON of ``headline`` (the kind's ``headline_metrics``;
    :func:`~slidemil.pipeline.evaluation.write_method_metrics`), atomically."""
    from slidemil.pipeline.evaluation import PLOT_DECIMALS, output_paths, write_method_metrics

    paths = output_paths(stage, method, root)
    write_csv(paths["predictions"], predictions)
    for name, table in plots.items():
        write_csv(paths["metrics"].parent.parent / "plots" / f"{stage}@{method}" / f"{name}.csv",
                  table.round(PLOT_DECIMALS))
    write_method_metrics(paths, summary, folds, headline)


def id_frame(slide_ids: Sequence[str], patient_ids: Sequence[str], fold: int, repeat: int) -> pd.DataFrame:
    """The identifying columns of one fold's predictions table."""
    return pd.DataFrame({"slide_id": list(slide_ids), "patient_id": list(patient_ids), "fold": int(fold),
                         "repeat": int(repeat)})
