"""The comparison report: every evaluated method × metric, and each method paired against the best.

Pure functions over the methods' summaries (``predictions/<stage>@<name>.details.json``) and predictions tables
(``predictions/<stage>@<name>.csv``) that ``train``, ``probe`` and ``zeroshot`` write through
:func:`pipeline.evaluation.finish_method`; the stage reads and writes the files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from slidemil.pipeline.compare import holm_adjust, paired_bootstrap_auroc, paired_bootstrap_metric

REPORT_METRICS = ("auroc", "balanced_accuracy", "f1_weighted", "kappa", "brier", "ece")
#: metrics shown per task kind; the first is the primary one (best method, paired comparison)
KIND_METRICS = {
    "classification": REPORT_METRICS,
    "survival": ("c_index", "c_index_uno", "td_auc"),
    "regression": ("pearson_r", "spearman_rho", "r2", "mae"),
}
METRIC_TITLES = {
    "c_index": "C-index (Harrell) ↑",
    "c_index_uno": "C-index (Uno) ↑",
    "td_auc": "time-dependent AUC ↑",
    "pearson_r": "Pearson r ↑",
    "spearman_rho": "Spearman ρ ↑",
    "r2": "R² ↑",
    "mae": "MAE ↓",
    "auroc": "AUROC ↑",
    "balanced_accuracy": "balanced accuracy ↑",
    "f1_weighted": "weighted F1 ↑",
    "kappa": "Cohen's κ ↑",
    "brier": "Brier ↓",
    "ece": "ECE ↓",
}
SYNTHETIC_BANNER = (
    "> **⚠ WARNING — features come from a SYNTHETIC (random) CONCH checkpoint (or random encoder weights): "
    "every number in this report is meaningless.** Set `CONCH_CHECKPOINT` to the real CONCH weights (`pytorch_model.bin`, "
    "Hugging Face MahmoodLab/conch) and re-run `dvc repro`."
)


#: weights_sha256 prefixes of made-up weights: docs/conch.md §6 synthetic CONCH, random test encoders
PLACEHOLDER_WEIGHTS = ("synthetic", "random")


def placeholder_stores(weights: Mapping[str, str]) -> dict[str, str]:
    """The feature stores of ``{store: weights_sha256}`` whose weights are synthetic or random."""
    return {store: w for store, w in weights.items() if str(w).startswith(PLACEHOLDER_WEIGHTS)}


def configured_methods(
    train_heads: Sequence[str], probes: Sequence[str], zeroshot_topk: Sequence[int] | None
) -> list[str]:
    """The methods the current params name: ``train@<head>``, ``probe@<name>``, ``zeroshot@top<k>``.

    Args:
        train_heads: ``train.heads``; probes: ``probe.probes``;
        zeroshot_topk: ``zeroshot.topk``, or ``None`` when zero-shot did not run (skipped or not run).
    """
    methods = [f"train@{h}" for h in train_heads] + [f"probe@{p}" for p in probes]
    return methods + [f"zeroshot@top{int(k)}" for k in (zeroshot_topk or [])]


def select_methods(found: Iterable[str], configured: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """Split the methods with a metrics file (``found``) by the ``configured`` ones.

    Returns:
        ``(included, ignored, missing)``: configured with a file (in configured order), with a file but
        not configured (stale, from another configuration; sorted), configured without a file.
    """
    found = set(found)
    included = [m for m in dict.fromkeys(configured) if m in found]
    missing = [m for m in dict.fromkeys(configured) if m not in found]
    return included, sorted(found - set(configured)), missing


def kind_of(summary: Mapping[str, Any]) -> str:
    """The task kind a metrics summary comes from (by its primary metric's key)."""
    for kind in ("survival", "regression"):
        if f"test/{KIND_METRICS[kind][0]}_mean" in summary:
            return kind
    return "classification"


def summary_table(summaries: Mapping[str, Mapping[str, Any]], split: str = "test",
                  metrics: Sequence[str] = REPORT_METRICS) -> pd.DataFrame:
    """One row per method with ``<metric>_mean|_std|_ci_low|_ci_high`` and ``n_usable_folds`` (NaN if absent).

    Args:
        summaries: ``{method: contents of metrics/<method>.json}`` (flat ``<split>/<metric>_…`` keys).
        metrics: the kind's metrics (:data:`KIND_METRICS`); the first orders the table.

    Returns:
        DataFrame indexed by method, sorted by the mean of ``metrics[0]`` (best first, NaN last), then by name.
    """
    rows = {}
    for method, summary in summaries.items():
        row = {
            f"{m}_{s}": _number(summary.get(f"{split}/{m}_{s}"))
            for m in metrics
            for s in ("mean", "std", "ci_low", "ci_high")
        }
        row["n_usable_folds"] = _number(summary.get(f"{split}/n_usable_folds"))
        row["n_folds"] = _number(summary.get(f"{split}/n_folds"))
        rows[method] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    if table.empty:
        return table
    table.index.name = "method"
    order = sorted(rows, key=lambda m: (-np.nan_to_num(table.loc[m, f"{metrics[0]}_mean"], nan=-np.inf), m))
    return table.loc[order]


def best_method(table: pd.DataFrame, primary: str = "auroc") -> str | None:
    """The method with the highest mean test ``primary`` metric (ties → alphabetical), ``None`` if none is finite."""
    if table.empty or not np.isfinite(table[f"{primary}_mean"].to_numpy(dtype=float)).any():
        return None
    return str(table.index[0])


def classes_of(predictions: pd.DataFrame) -> list[str]:
    """Class names in index order, from the ``prob_<class>`` columns of a predictions table."""
    return [c.removeprefix("prob_") for c in predictions.columns if c.startswith("prob_")]


def compare_to_best(
    predictions: Mapping[str, pd.DataFrame], best: str, n_boot: int, seed: int
) -> pd.DataFrame:
    """Pair every other method with ``best`` on the test predictions both made (same slide, fold, repeat).

    Returns:
        DataFrame indexed by method: ``auroc``, ``auroc_best`` (on the shared slides), ``auroc_diff``
        (method − best), its 95% ``ci_low``/``ci_high``, two-sided ``p_value``, ``p_holm`` (Holm-adjusted
        over the methods compared), ``n_slides``, ``n_folds`` (:func:`pipeline.compare.paired_bootstrap_auroc`,
        fold × class stratified). A method without shared slides or classes gets a ``note`` instead.
    """
    reference = predictions[best]
    classes = classes_of(reference)
    prob = [f"prob_{c}" for c in classes]
    keys = ["slide_id", "fold", "repeat"]
    rows: dict[str, dict[str, Any]] = {}
    for method, table in predictions.items():
        if method == best:
            continue
        if classes_of(table) != classes:
            rows[method] = {"note": f"classes {classes_of(table)} differ from {best}'s {classes}"}
            continue
        joined = reference[keys + ["y_true"] + prob].merge(table[keys + prob], on=keys, suffixes=("_best", ""))
        if joined.empty:
            rows[method] = {"note": f"no test slide shared with {best}"}
            continue
        strata = joined["repeat"].astype(str) + ":" + joined["fold"].astype(str)
        try:
            result = paired_bootstrap_auroc(
                joined["y_true"].to_numpy(int),
                joined[prob].to_numpy(float),
                joined[[f"{p}_best" for p in prob]].to_numpy(float),
                strata.to_numpy(),
                n_boot=n_boot,
                seed=seed,
            )
        except ValueError as exc:
            rows[method] = {"note": str(exc)}
            continue
        out = result.as_dict()
        rows[method] = {
            "auroc": out["auroc_a"],
            "auroc_best": out["auroc_b"],
            **{k: out[k] for k in ("auroc_diff", "ci_low", "ci_high", "p_value", "n_slides", "n_folds")},
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "method"
    if "p_value" in frame:
        frame["p_holm"] = holm_adjust(frame["p_value"].to_numpy(float))
    return frame


def compare_targets_to_best(predictions: Mapping[str, pd.DataFrame], best: str, kind: str, n_boot: int,
                            seed: int) -> pd.DataFrame:
    """Survival / regression: pair every other method with ``best`` on the test predictions both made: the mean
    per-fold difference of Harrell's C-index (survival) or Pearson r (regression) with a fold-stratified paired
    bootstrap (:func:`pipeline.compare.paired_bootstrap_metric`). Columns as :func:`compare_to_best`, named by
    the metric (``c_index``, ``c_index_best``, ``c_index_diff``, …)."""
    from slidemil.pipeline.kinds.regression_metrics import pearson_r_resampled
    from slidemil.pipeline.kinds.survival_metrics import harrell_c_resampled

    primary = KIND_METRICS[kind][0]
    truth, value = (["time", "event"], "risk") if kind == "survival" else (["target"], "prediction")

    def score(y, pred, weights):
        if kind == "survival":
            return harrell_c_resampled(y[:, 0], y[:, 1], pred, weights)
        return pearson_r_resampled(y[:, 0], pred, weights)

    keys = ["slide_id", "fold", "repeat"]
    rows: dict[str, dict[str, Any]] = {}
    for method, table in predictions.items():
        if method == best:
            continue
        joined = predictions[best][keys + truth + [value]].merge(table[keys + [value]], on=keys,
                                                                 suffixes=("_best", ""))
        if joined.empty:
            rows[method] = {"note": f"no test slide shared with {best}"}
            continue
        strata = (joined["repeat"].astype(str) + ":" + joined["fold"].astype(str)).to_numpy()
        try:
            out = paired_bootstrap_metric(score, joined[truth].to_numpy(float), joined[value].to_numpy(float),
                                          joined[f"{value}_best"].to_numpy(float), strata, n_boot, seed).as_dict()
        except ValueError as exc:
            rows[method] = {"note": str(exc)}
            continue
        rows[method] = {primary: out["auroc_a"], f"{primary}_best": out["auroc_b"], f"{primary}_diff": out["auroc_diff"],
                        **{k: out[k] for k in ("ci_low", "ci_high", "p_value", "n_slides", "n_folds")}}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "method"
    if "p_value" in frame:
        frame["p_holm"] = holm_adjust(frame["p_value"].to_numpy(float))
    return frame


def render_markdown(
    table: pd.DataFrame,
    comparison: pd.DataFrame,
    best: str | None,
    *,
    synthetic: Mapping[str, str],
    skipped: Mapping[str, str],
    n_boot: int,
    ignored: Sequence[str] = (),
    missing: Sequence[str] = (),
    kind: str = "classification",
) -> str:
    """The report ``reports/summary.md``: banner (``synthetic``: {store: weights} of made-up weights),
    method table, paired comparison; ``ignored`` (metrics files of methods not in the current params) and
    ``missing`` (methods the params name without a metrics file) are listed by name; ``kind`` picks the metrics
    (:data:`KIND_METRICS`, the first is the primary one)."""
    metrics = KIND_METRICS[kind]
    p = metrics[0]
    name_of = {"auroc": "AUROC", "c_index": "C-index", "pearson_r": "Pearson r"}[p]
    lines: list[str] = []
    if synthetic:
        stores = ", ".join(f"`{store}` ({w})" for store, w in sorted(synthetic.items()))
        lines += [SYNTHETIC_BANNER, f"> Feature store(s) with made-up weights: {stores}.", ""]
    lines += ["# slidemil — method comparison", ""]
    if not table.empty:
        lines += [
            f"Test-set metrics over the cross-validation folds, {len(table)} method(s) of the current params; "
            f"best by mean test {name_of}: **{best or 'n/a'}**.",
            "",
            "Each cell is `fold mean ± fold SD [pooled 95% CI]`: mean and standard deviation of the metric over "
            "the usable test folds, then in brackets a 95% bootstrap interval (over slides) of the metric "
            "computed once on the pooled out-of-fold test predictions of all folds — a different estimate, "
            "so the bracket is not an interval for the fold mean and need not contain it. "
            "Folds: usable / total test folds.",
            "",
            "| method | " + " | ".join(f"{METRIC_TITLES[m]} mean ± SD [pooled CI]" for m in metrics)
            + " | usable/total folds |",
            "|---|" + "---|" * (len(metrics) + 1),
        ]
        for method, row in table.iterrows():
            cells = [_cell(row, m) for m in metrics]
            name = f"**{method}**" if method == best else str(method)
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {_int(row['n_usable_folds'])}/{_int(row['n_folds'])} |")
        lines.append("")
    if skipped:
        lines += ["Not run:", ""] + [f"- `{stage}`: {reason}" for stage, reason in sorted(skipped.items())] + [""]
    if missing:
        lines += ["Missing (named by the current params, no metrics file; run its stage, e.g. `dvc repro`):", ""]
        lines += [f"- `{method}`" for method in missing] + [""]
    if ignored:
        lines += ["Not in this configuration (ignored): metrics files of methods the current params do not "
                  "name, left from another configuration:", ""]
        lines += [f"- `{method}`" for method in ignored] + [""]
    if best is not None and len(table) > 1:
        lines += [
            f"## Paired comparison with {best}",
            "",
            f"Δ {name_of} = mean per-fold test {name_of} of the method − that of {best}, on the test slides both "
            f"scored. 95% CI of Δ and two-sided p (H0: Δ = 0) from a paired bootstrap over slides ({n_boot} "
            f"replicates, stratified by fold{' and class' if p == 'auroc' else ''}); replicates with Δ exactly 0 (identical slide rankings) count half "
            "on each side, so an interval ending at 0 can go with a large p. "
            f"**Caution:** {best} was chosen as best on these same test folds, so its lead is optimistic "
            "(selection bias), and the p-values are per comparison, not corrected for multiple comparisons; "
            "p (Holm) is Holm-adjusted over the methods listed here.",
            "",
            f"| method | {name_of} | {name_of} of best | Δ {name_of} | 95% CI of Δ | p | p (Holm) | slides | folds |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for method, row in comparison.iterrows():
            note = row.get("note")
            if isinstance(note, str):
                lines.append(f"| {method} | {note} |  |  |  |  |  |  |  |")
                continue
            lines.append(
                f"| {method} | {row[p]:.3f} | {row[f'{p}_best']:.3f} | {row[f'{p}_diff']:+.3f} | "
                f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] | {_p(row['p_value'], n_boot)} | "
                f"{_holm(row['p_holm'], row['p_value'], n_boot)} | {_int(row['n_slides'])} | {_int(row['n_folds'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def report_json(
    table: pd.DataFrame,
    comparison: pd.DataFrame,
    best: str | None,
    *,
    synthetic: Mapping[str, str],
    skipped: Mapping[str, str],
    ignored: Sequence[str] = (),
    missing: Sequence[str] = (),
    kind: str = "classification",
) -> dict[str, Any]:
    """``reports/comparison.json``: the best method and each method's paired result
    (``best_test_<primary>_mean``: AUROC, C-index or Pearson r by ``kind``).

    Strict JSON: an undefined number (no finite primary metric) is ``None`` (``null``), never NaN.
    """
    p = KIND_METRICS[kind][0]
    best_value = _finite(table.loc[best, f"{p}_mean"]) if best is not None else None
    out: dict[str, Any] = {
        "best_method": best or "",
        f"best_test_{p}_mean": best_value,
        "n_methods": int(len(table)),
        "synthetic_features": bool(synthetic),
        "comparison": {},
    }
    for method, row in comparison.iterrows():
        note = row.get("note")
        if isinstance(note, str):
            out["comparison"][method] = {"note": note}
        else:
            out["comparison"][method] = {
                k: (int(row[k]) if k in ("n_slides", "n_folds") else _finite(row[k]))
                for k in (f"{p}_diff", "ci_low", "ci_high", "p_value", "p_holm", "n_slides", "n_folds")
            }
    if skipped:
        out["not_run"] = dict(skipped)
    if missing:
        out["missing"] = list(missing)
    if ignored:
        out["ignored"] = list(ignored)
    return out


def report_metrics(table: pd.DataFrame, best: str | None, *, synthetic: Mapping[str, str],
                   kind: str = "classification") -> dict[str, Any]:
    """``reports/metrics.json`` for ``dvc metrics show`` / ``dvc exp show``: the best method, its mean test
    primary metric (AUROC, C-index or Pearson r by ``kind``), whether the features are made up, and each
    method's mean test primary metric under ``<primary>.<method>`` (one short column per method; the paired
    comparison is in ``reports/comparison.json``)."""
    p = KIND_METRICS[kind][0]
    return {
        "best_method": best or "",
        f"best_{p}": _finite(table.loc[best, f"{p}_mean"]) if best is not None else None,
        "synthetic_features": bool(synthetic),
        p: {str(method): _finite(row[f"{p}_mean"]) for method, row in table.iterrows()},
    }


def _finite(value: Any) -> float | None:
    number = _number(value)
    return number if math.isfinite(number) else None


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _cell(row: pd.Series, metric: str) -> str:
    mean, std, low, high = (row[f"{metric}_{s}"] for s in ("mean", "std", "ci_low", "ci_high"))
    if not math.isfinite(mean):
        return "n/a"
    text = f"{mean:.3f} ± {std:.3f}" if math.isfinite(std) else f"{mean:.3f}"
    if math.isfinite(low) and math.isfinite(high):
        text += f" [{low:.3f}, {high:.3f}]"
    return text


def _int(value: float) -> str:
    return str(int(value)) if isinstance(value, (int, float)) and math.isfinite(value) else "?"


def _p(p: float, n_boot: int) -> str:
    return f"≤ {p:.1g}" if _at_floor(p, n_boot) else f"{p:.3g}"


def _holm(p_holm: float, p: float, n_boot: int) -> str:
    """Holm-adjusted p; an upper bound (≤) when the raw p is at the bootstrap's resolution floor."""
    return f"≤ {p_holm:.2g}" if _at_floor(p, n_boot) else f"{p_holm:.3g}"


def _at_floor(p: float, n_boot: int) -> bool:
    """``p`` is the floor 2/(B+1) of :func:`pipeline.compare.percentile_interval_and_p`."""
    return p <= 2.0 / (n_boot + 1) + 1e-12

