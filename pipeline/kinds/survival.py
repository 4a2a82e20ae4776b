"""The survival task kind: follow-up time and event per slide (or patient), a risk per prediction.

``y_true`` is ``[n, 2]`` (time, event); ``outputs`` is ``[n, 2 + S]``: the risk (higher = earlier event), the
training fold's median risk (the cut of the Kaplan–Meier risk groups, stored per row so the groups can be
rebuilt from the predictions CSV), then the predicted survival S(t) at the end of each of the ``S`` time
bins where the method gives it (the discrete-time NLL heads; ``S = 0`` otherwise).

Files: ``predictions/<stage>@<m>.csv`` (``slide_id, patient_id, fold, repeat, time, event, risk, risk_cut,
risk_group, surv_bin<k>…``), ``metrics/<stage>@<m>.json`` (headline numbers: C-index, Uno's C-index and
td-AUC with their 95% intervals), ``predictions/<stage>@<m>.details.json`` (everything else, per-fold values),
``plots/<stage>@<m>/km.csv`` (Kaplan–Meier curves of the pooled high/low risk groups with numbers at risk,
for ``dvc plots``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from slidemil.pipeline.kinds.common import id_frame, summarize, write_outputs
from slidemil.pipeline.kinds.objectives import CoxLoss, DiscreteTimeNLL
from slidemil.pipeline.kinds.survival_metrics import (
    logrank_p,
    risk_groups,
    structured,
    survival_bootstrap_ci,
    survival_metrics,
)
from slidemil.pipeline.task_kinds import TASK_KINDS


def survival_outputs(prediction: np.ndarray, train_risk: np.ndarray) -> np.ndarray:
    """The kind's ``outputs [n, 2 + S]`` from a method's prediction ``[n, 1 + S]`` (risk, then S(t) per bin) and
    the risks ``[m]`` of the training slides (their median is the risk-group cut)."""
    prediction = np.asarray(prediction, float).reshape(len(prediction), -1)
    cut = np.full((len(prediction), 1), float(np.median(train_risk)))
    return np.column_stack([prediction[:, :1], cut, prediction[:, 1:]])


@TASK_KINDS.register("survival")
class Survival:
    """Survival: Harrell's and Uno's C-index, time-dependent AUC at ``horizons``, Kaplan–Meier risk groups.

    Args (constructor): task (unused: the column names are the split's business), data (``targets``: slide →
    (time, event); the whole cohort's follow-up weighs Uno's C-index and the td-AUC, whose default horizons are
    the quartiles of its event times).
    """

    name = "survival"
    headline_metrics: tuple[str, ...] = ("c_index", "c_index_uno", "td_auc")

    def __init__(self, task: Any, data: Any) -> None:
        table = np.asarray([data.targets[s] for s in data.slides()], float).reshape(-1, 2)
        self.reference = structured(table[:, 0], table[:, 1])
        events = table[table[:, 1] == 1, 0]
        self.horizons: tuple[float, ...] = tuple(float(h) for h in np.quantile(events, [0.25, 0.5, 0.75])) \
            if len(events) else ()

    # --- what train/probe need -------------------------------------------------------------------------
    def targets(self, data: Any, ids: Sequence[str]) -> np.ndarray:
        """``[n, 2]`` (time, event) of ``ids``."""
        return np.asarray([data.targets[s] for s in ids], float).reshape(-1, 2)

    def objective(self, train_y: np.ndarray, section: Any):
        """The MIL training objective of the validated ``train:`` section (``TrainSection``):
        ``survival_loss`` nll (``survival_bins`` bins) or cox."""
        return CoxLoss(train_y) if section.survival_loss == "cox" else DiscreteTimeNLL(train_y, section.survival_bins)

    def outputs(self, prediction: np.ndarray, train_prediction: np.ndarray) -> np.ndarray:
        """Test ``outputs`` from the method's test and training predictions ``[n, 1 + S]`` (see module)."""
        return survival_outputs(prediction, np.asarray(train_prediction, float).reshape(len(train_prediction), -1)[:, 0])

    # --- the TaskKind protocol ---------------------------------------------------------------------------
    def fold_metrics(self, y_true: Any, outputs: np.ndarray) -> dict[str, float]:
        y, out = np.asarray(y_true, float), np.asarray(outputs, float)
        scores = survival_metrics(y[:, 0], y[:, 1], out[:, 0], self.horizons, self.reference)
        scores["logrank_p"] = logrank_p(y[:, 0], y[:, 1], risk_groups(out[:, 0], out[:, 1]))
        return {f"test/{k}": v for k, v in scores.items()}

    def predictions_table(self, slide_ids, patient_ids, y_true, outputs, fold, repeat) -> pd.DataFrame:
        y, out = np.asarray(y_true, float), np.asarray(outputs, float)
        table = id_frame(slide_ids, patient_ids, fold, repeat)
        table["time"], table["event"] = y[:, 0], y[:, 1].astype(int)
        table["risk"], table["risk_cut"] = out[:, 0], out[:, 1]
        table["risk_group"] = risk_groups(out[:, 0], out[:, 1])
        for k in range(out.shape[1] - 2):
            table[f"surv_bin{k + 1}"] = out[:, 2 + k]
        return table

    def pooled(self, predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """One row per slide (averaged over repeats): ``([n, 2], [n, 2])`` (risk, cut)."""
        grouped = predictions.groupby("slide_id", sort=True)
        y = grouped[["time", "event"]].first().to_numpy(float)
        return y, grouped[["risk", "risk_cut"]].mean().to_numpy(float)

    def finish(self, stage, method, predictions, folds, bootstrap, root=".") -> dict[str, float]:
        ci, pooled, km = None, None, pd.DataFrame(columns=["group", "time", "survival", "at_risk"])
        if len(predictions):
            y, out = self.pooled(predictions)
            groups = risk_groups(out[:, 0], out[:, 1])
            pooled = {k: v for k, v in survival_metrics(y[:, 0], y[:, 1], out[:, 0], (), self.reference).items()
                      if k in ("c_index", "c_index_uno")}
            pooled["logrank_p"] = logrank_p(y[:, 0], y[:, 1], groups)
            if bootstrap.n > 0:
                ci = survival_bootstrap_ci(y[:, 0], y[:, 1], out[:, 0], self.horizons, self.reference,
                                           bootstrap.n, bootstrap.seed)
            km = km_table(y[:, 0], y[:, 1], groups)
        summary = summarize(folds, ci, "c_index", pooled)
        write_outputs(stage, method, predictions, folds, summary, {"km": km}, self.headline_metrics, root)
        return summary

    def figures(self, y_true, outputs, title, scope) -> dict[str, Any]:
        from slidemil.pipeline.kinds.figures import km_figure

        y, out = np.asarray(y_true, float), np.asarray(outputs, float)
        return {"figures/km.png": km_figure(y[:, 0], y[:, 1], risk_groups(out[:, 0], out[:, 1]),
                                            f"{title}: {scope} KM by risk group")}

    def headline(self, summary: Mapping[str, float]) -> str:
        return (f"test C-index {summary.get('test/c_index_mean', float('nan')):.3f} ± "
                f"{summary.get('test/c_index_std', float('nan')):.3f} over {summary.get('test/n_usable_folds', 0)} "
                f"usable folds ({summary.get('n_failed_folds', 0)} failed)")


def km_table(time: np.ndarray, event: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    """Kaplan–Meier step points per risk group (lifelines): ``group, time, survival, at_risk``."""
    from lifelines import KaplanMeierFitter

    parts = []
    for group in ("high", "low"):
        members = groups == group
        if not members.any():
            continue
        fitter = KaplanMeierFitter().fit(time[members], event[members])
        table = fitter.event_table
        parts.append(pd.DataFrame({"group": group, "time": fitter.survival_function_.index.to_numpy(float),
                                   "survival": fitter.survival_function_.iloc[:, 0].to_numpy(float),
                                   "at_risk": table["at_risk"].reindex(fitter.survival_function_.index).to_numpy()}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["group", "time", "survival",
                                                                                    "at_risk"])
