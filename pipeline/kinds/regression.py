"""The regression task kind: a numeric target per slide (or patient), a predicted value in the user's units.

``y_true`` is ``[n]`` (targets), ``outputs`` ``[n]`` (predictions). Files: ``predictions/<stage>@<m>.csv``
(``slide_id, patient_id, fold, repeat, target, prediction``), ``metrics/<stage>@<m>.json`` (headline numbers:
Pearson r, Spearman ρ, R², MAE with their 95% intervals), ``predictions/<stage>@<m>.details.json`` (everything
else, per-fold values), ``plots/<stage>@<m>/scatter.csv`` (predicted vs true, for ``dvc plots``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from slidemil.pipeline.kinds.common import id_frame, summarize, write_outputs
from slidemil.pipeline.kinds.objectives import StandardisedRegression
from slidemil.pipeline.kinds.regression_metrics import regression_bootstrap_ci, regression_metrics
from slidemil.pipeline.task_kinds import TASK_KINDS


@TASK_KINDS.register("regression")
class Regression:
    """Regression: Pearson r, Spearman ρ, R², MAE (bootstrap intervals); a predicted-vs-true scatter."""

    name = "regression"
    headline_metrics: tuple[str, ...] = ("pearson_r", "spearman_rho", "r2", "mae")

    def __init__(self, task: Any, data: Any) -> None:
        del task, data  # nothing to keep: targets come with each fold

    def targets(self, data: Any, ids: Sequence[str]) -> np.ndarray:
        """``[n]`` targets of ``ids``."""
        return np.asarray([data.targets[s] for s in ids], float)

    def objective(self, train_y: np.ndarray, section: Any) -> StandardisedRegression:
        """The MIL training objective of the validated ``train:`` section (``TrainSection``):
        ``regression_loss`` (mse | huber) on the standardised target."""
        return StandardisedRegression(train_y, section.regression_loss)

    def outputs(self, prediction: np.ndarray, train_prediction: np.ndarray) -> np.ndarray:
        """Test ``outputs [n]`` from the method's predictions (the training ones are not needed)."""
        del train_prediction
        return np.asarray(prediction, float).reshape(-1)

    def fold_metrics(self, y_true: Any, outputs: np.ndarray) -> dict[str, float]:
        return {f"test/{k}": v for k, v in regression_metrics(y_true, outputs).items()}

    def predictions_table(self, slide_ids, patient_ids, y_true, outputs, fold, repeat) -> pd.DataFrame:
        table = id_frame(slide_ids, patient_ids, fold, repeat)
        table["target"], table["prediction"] = np.asarray(y_true, float), np.asarray(outputs, float).reshape(-1)
        return table

    def pooled(self, predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """One row per slide (predictions averaged over repeats): ``([n], [n])``."""
        grouped = predictions.groupby("slide_id", sort=True)
        return grouped["target"].first().to_numpy(float), grouped["prediction"].mean().to_numpy(float)

    def finish(self, stage, method, predictions, folds, bootstrap, root=".") -> dict[str, float]:
        ci, pooled, scatter = None, None, pd.DataFrame(columns=["slide_id", "target", "prediction"])
        if len(predictions):
            y, p = self.pooled(predictions)
            pooled = regression_metrics(y, p)
            ci = regression_bootstrap_ci(y, p, bootstrap.n, bootstrap.seed) if bootstrap.n > 0 else None
            scatter = pd.DataFrame({"slide_id": sorted(predictions["slide_id"].unique()), "target": y,
                                    "prediction": p})
        summary = summarize(folds, ci, "pearson_r", pooled)
        write_outputs(stage, method, predictions, folds, summary, {"scatter": scatter}, self.headline_metrics, root)
        return summary

    def figures(self, y_true, outputs, title, scope) -> dict[str, Any]:
        from slidemil.pipeline.kinds.figures import scatter_figure

        return {"figures/scatter.png": scatter_figure(y_true, outputs, f"{title}: {scope} predicted vs true")}

    def headline(self, summary: Mapping[str, float]) -> str:
        return (f"test Pearson r {summary.get('test/pearson_r_mean', float('nan')):.3f} ± "
                f"{summary.get('test/pearson_r_std', float('nan')):.3f} over "
                f"{summary.get('test/n_usable_folds', 0)} usable folds ({summary.get('n_failed_folds', 0)} failed)")
