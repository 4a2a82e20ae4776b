"""One comparison report of every evaluated method (MIL heads, probes, zero-shot per k) on the same folds.

Reads metrics/<stage>@<name>.json and predictions/<stage>@<name>.csv of train, probe and zeroshot and
writes reports/summary.md (methods × AUROC, balanced accuracy, weighted F1, kappa, Brier, ECE as
mean ± std [95% interval] with usable folds; every method paired against the best one by mean test AUROC
with a bootstrap over the shared test slides) and reports/metrics.json (best method and comparison, for
`dvc metrics show`), and logs the report as an artifact of a `report@summary` MLflow run.

A stage summary file with `skipped` (metrics/zeroshot.json when zero-shot could not run) leaves that
stage's methods out and lists the reason. Features made with synthetic CONCH (or random) weights put a
loud warning at the top of the report.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from pipeline.params import stage_params

HELP = "comparison of every method on the same folds → reports/summary.md, reports/metrics.json"

DEFAULTS: dict[str, Any] = {
    "metrics": "metrics",  # folder of <stage>@<name>.json
    "predictions": "predictions",  # folder of <stage>@<name>.csv
    "features": "data/features",  # feature store(s) (a .zarr or a folder of them): synthetic-weights banner
    "n_bootstrap": 2000,  # paired bootstrap replicates
    "seed": 0,
    "output": "reports/summary.md",
    "json": "reports/metrics.json",
}

log = logging.getLogger(__name__)


def run(params: dict[str, Any], args: argparse.Namespace) -> int:
    """Write the report; returns 0 (user errors raise SlidemilError subclasses)."""
    import pandas as pd

    from pipeline.atomic import write_json, write_text
    from pipeline.errors import StoreError
    from pipeline.report import (
        best_method,
        compare_to_best,
        placeholder_stores,
        render_markdown,
        report_json,
        summary_table,
    )

    section = stage_params(params, "report", DEFAULTS)
    summaries, skipped = read_summaries(Path(section["metrics"]))
    table = summary_table(summaries)
    best = best_method(table)
    predictions: dict[str, pd.DataFrame] = {}
    for method in summaries:
        path = Path(section["predictions"]) / f"{method}.csv"
        if path.is_file():
            predictions[method] = pd.read_csv(path, dtype={"slide_id": str, "patient_id": str, "label": str})
        else:
            log.warning("%s: no predictions table %s; left out of the paired comparison", method, path)
    if best is not None and best not in predictions:
        raise StoreError(f"best method {best}: predictions table {section['predictions']}/{best}.csv is missing; "
                         f"re-run its stage (dvc repro)")
    comparison = (compare_to_best(predictions, best, int(section["n_bootstrap"]), int(section["seed"]))
                  if best is not None else pd.DataFrame())
    weights = feature_weights(Path(section["features"]))
    synthetic = placeholder_stores(weights)
    markdown = render_markdown(table, comparison, best, synthetic=synthetic, skipped=skipped,
                               n_boot=int(section["n_bootstrap"]))
    write_text(section["output"], markdown)
    document = report_json(table, comparison, best, synthetic=synthetic, skipped=skipped)
    write_json(section["json"], document)
    log.info("report: %d method(s), best %s → %s", len(table), best, section["output"])
    if synthetic:
        log.warning("features come from SYNTHETIC/random weights (%s): the report's numbers are meaningless",
                    ", ".join(synthetic.values()))
    _log_mlflow(params, section, document, weights)
    return 0


def read_summaries(folder: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """``{<stage>@<name>: summary}`` of the method files in ``folder`` and ``{stage: reason}`` of skipped stages.

    A method whose stage summary (``<stage>.json``) says ``skipped`` is left out (its old files are stale).

    Raises:
        StoreError: a metrics file is not valid JSON.
    """
    from pipeline.errors import StoreError

    def load(path: Path) -> dict[str, Any]:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise StoreError(f"{path} is not valid JSON ({exc}); re-run the stage that wrote it") from exc

    skipped = {}
    for path in sorted(folder.glob("*.json")):
        if "@" not in path.stem:
            content = load(path)
            if isinstance(content, dict) and content.get("skipped"):
                skipped[path.stem] = str(content["skipped"])
    summaries = {
        path.stem: load(path)
        for path in sorted(folder.glob("*@*.json"))
        if path.stem.split("@", 1)[0] not in skipped
    }
    return summaries, skipped


def feature_weights(features: Path) -> dict[str, str]:
    """``{store path: weights_sha256}`` of the feature store ``features`` or of every ``*.zarr`` in it."""
    from extract.store import open_features
    from pipeline.errors import StoreError

    stores = [features] if features.suffix == ".zarr" else sorted(features.glob("*.zarr"))
    weights = {}
    for path in stores:
        try:
            weights[str(path)] = str(open_features(path).weights_sha256 or "")
        except StoreError as exc:
            log.warning("cannot read feature store %s for its weights: %s", path, exc)
    return weights


def _log_mlflow(params: dict[str, Any], section: dict[str, Any], document: dict[str, Any],
                weights: dict[str, str]) -> None:
    from pipeline.report import placeholder_stores
    from pipeline.tracking import MLFLOW_DEFAULTS, parent_run, provenance_tags
    from splits.task import load_task

    mlflow_section = stage_params(params, "mlflow", MLFLOW_DEFAULTS)
    experiment = mlflow_section["experiment"] or load_task(params).label
    made_up = list(placeholder_stores(weights).values())
    tags = provenance_tags(weights_sha256=(made_up or list(weights.values()) or [None])[0])
    tags["report.best_method"] = document["best_method"]
    with parent_run("report", "summary", {"report": section}, tags, experiment, mlflow_section["tracking_uri"]) as run:
        run.log_metrics({"best_test_auroc_mean": document["best_test_auroc_mean"], "n_methods": document["n_methods"]})
        run.log_artifact(section["output"])
        run.log_artifact(section["json"])
