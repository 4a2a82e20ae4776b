"""One comparison report of every evaluated method (MIL heads, probes, zero-shot per k) on the same folds.

Finds the methods by their metrics/<stage>@<name>.json, reads predictions/<stage>@<name>.details.json and
.csv, and writes reports/summary.md (methods × the task kind's metrics, e.g. AUROC, balanced accuracy,
weighted F1, kappa, Brier, ECE, or C-index, Uno's C-index, td-AUC, or Pearson r, Spearman ρ, R², MAE, as
mean ± std [95% interval] with usable folds; every method paired against the best one by its mean primary
metric with a bootstrap over the shared test slides), reports/metrics.json (best method and each method's
mean test primary metric, for `dvc metrics show` / `dvc exp show`) and reports/comparison.json (the paired
comparison). An MLflow `report` run holds the tables (`log_table`) and files, and the report becomes the
experiment's description.

Only the methods the current params name are reported: train@<head> of train.heads, probe@<name> of
probe.probes, zeroshot@top<k> of zeroshot.topk when zero-shot ran (its zeroshot.output summary exists and
is not `skipped`; a skipped run is listed with its reason). Metrics files of other methods (stale, from
another configuration or `dvc exp run -S`) are listed as ignored; a named method without a metrics file
is listed as missing. No method at all is an error (nothing is written). Features made with synthetic
CONCH (or random) weights put a loud warning at the top of the report.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from pydantic import Field

from slidemil.core.params import Section, read_section

HELP = "comparison of every method on the same folds → reports/summary.md, reports/metrics.json"

class ReportSection(Section):
    """The ``report:`` params section."""

    metrics: str = Field("metrics", description="folder of <stage>@<name>.json (headline numbers: which methods ran)")
    predictions: str = Field("predictions", description="folder of <stage>@<name>.csv and .details.json (every "
                             "metric's summary and the per-fold values the report reads)")
    features: str = Field("data/features", description="feature store(s) (a .zarr or a folder of them): "
                          "the synthetic-weights banner")
    n_bootstrap: int = Field(2000, ge=1, description="paired bootstrap replicates of the comparison to the best")
    seed: int = Field(0, description="seed of the bootstrap")
    output: str = Field("reports/summary.md", description="the Markdown report")
    json_path: str = Field("reports/metrics.json", alias="json", description="DVC metrics: the best method and "
                           "each method's mean test primary metric (AUROC, C-index or Pearson r)")
    comparison: str = Field("reports/comparison.json", description="each method paired against the best one "
                            "(difference, 95% interval, p-values); not a DVC metric")


SECTION = ReportSection  # the CLI validates every stage's section before any stage works

log = logging.getLogger(__name__)


def run(params: dict[str, Any], args: argparse.Namespace) -> int:
    """Write the report; returns 0.

    Raises:
        StoreError: no method of the current params has a metrics file (run train/probe/zeroshot first),
            a metrics file is not valid JSON, or the best method's predictions table is missing.
        ParamsError: a params section is malformed.
    """
    import pandas as pd

    from slidemil.core.atomic import write_json, write_text
    from slidemil.core.errors import StoreError
    from slidemil.pipeline.report import (
        KIND_METRICS,
        best_method,
        classes_of,
        compare_targets_to_best,
        compare_to_best,
        kind_of,
        placeholder_stores,
        render_markdown,
        report_json,
        report_metrics,
        select_methods,
        summary_table,
    )

    section = read_section(params, "report", ReportSection)
    configured, skipped = current_methods(params)
    folder = Path(section.metrics)
    included, ignored, missing = select_methods((p.stem for p in folder.glob("*@*.json")), configured)
    if ignored:
        log.warning("ignoring metrics of methods not in the current params: %s", ", ".join(ignored))
    if missing:
        log.warning("no metrics file for %s (in %s); run their stages", ", ".join(missing), folder)
    if not included:
        raise StoreError(_no_method_message(folder, missing, ignored, skipped))
    summaries = {method: read_summary(folder, Path(section.predictions), method) for method in included}
    kind = kind_of(next(iter(summaries.values())))
    table = summary_table(summaries, metrics=KIND_METRICS[kind])
    best = best_method(table, KIND_METRICS[kind][0])
    predictions: dict[str, pd.DataFrame] = {}
    for method in summaries:
        path = Path(section.predictions) / f"{method}.csv"
        table_or_reason = read_predictions(path)
        if isinstance(table_or_reason, str):
            log.warning("%s: predictions table %s %s; left out of the paired comparison", method, path,
                        table_or_reason)
        else:
            predictions[method] = table_or_reason
    if best is not None and best not in predictions:
        raise StoreError(f"best method {best}: predictions table {section.predictions}/{best}.csv is missing; "
                         f"re-run its stage (dvc repro)")
    if best is None:
        comparison = pd.DataFrame()
    elif kind == "classification":
        comparison = compare_to_best(predictions, best, section.n_bootstrap, section.seed)
    else:
        comparison = compare_targets_to_best(predictions, best, kind, section.n_bootstrap, section.seed)
    weights = feature_weights(Path(section.features))
    synthetic = placeholder_stores(weights)
    markdown = render_markdown(table, comparison, best, synthetic=synthetic, skipped=skipped,
                               n_boot=section.n_bootstrap, ignored=ignored, missing=missing, kind=kind)
    write_text(section.output, markdown)
    document = report_json(table, comparison, best, synthetic=synthetic, skipped=skipped, ignored=ignored,
                           missing=missing, kind=kind)
    write_json(section.comparison, document)
    write_json(section.json_path, report_metrics(table, best, synthetic=synthetic, kind=kind))
    log.info("report: %d method(s), best %s → %s", len(table), best, section.output)
    if synthetic:
        log.warning("features come from SYNTHETIC/random weights (%s): the report's numbers are meaningless",
                    ", ".join(synthetic.values()))
    classes = classes_of(predictions[best]) if best is not None and kind == "classification" else []
    _log_mlflow(params, section, document, weights, markdown, table, comparison, classes)
    return 0


def read_summary(metrics: Path, predictions: Path, method: str) -> dict[str, Any]:
    """A method's full summary: ``<predictions>/<method>.details.json``, or for results written before the
    details file existed, the metrics file itself (which then held every number).

    Raises:
        StoreError: not valid JSON.
    """
    details = predictions / f"{method}.details.json"
    return read_json(details if details.is_file() else metrics / f"{method}.json")
def read_predictions(path: Path):
    """The predictions table at ``path`` as a DataFrame, or why there is none (missing; no rows, e.g. when a
    method failed on every fold and wrote an empty table)."""
    import pandas as pd

    if not path.is_file():
        return "is missing"
    try:
        table = pd.read_csv(path, dtype={"slide_id": str, "patient_id": str, "label": str})
    except pd.errors.EmptyDataError:
        return "has no rows (every fold failed?)"
    return table if len(table) else "has no rows (every fold failed?)"


def current_methods(params: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The methods the current params name, and ``{stage: reason}`` of a stage that did not run.

    train.heads and probe.probes always; zeroshot.topk only when zero-shot ran (its ``zeroshot.output``
    summary exists and is not ``skipped``).

    Raises:
        ParamsError: a train, probe or zeroshot section is malformed.
        StoreError: the zero-shot summary is not valid JSON.
    """
    from slidemil.pipeline.probes import probe_kinds
    from slidemil.pipeline.report import configured_methods
    from slidemil.pipeline.stages import probe, train, zeroshot
    from slidemil.splits.task import load_task

    heads = read_section(params, "train", train.TrainSection).heads
    kind = load_task(params).type
    probes = [p for p in read_section(params, "probe", probe.ProbeSection).probes if kind in probe_kinds(p)]
    zs = read_section(params, "zeroshot", zeroshot.ZeroshotSection)
    summary = Path(zs.output)
    skipped = {}
    if kind != "classification":
        skipped["zeroshot"] = f"zero-shot scores classes; the task is {kind}"
    elif not summary.is_file():
        skipped["zeroshot"] = f"no {summary}; run `slidemil zeroshot` (or `dvc repro`)"
    else:
        content = read_json(summary)
        if isinstance(content, dict) and content.get("skipped"):
            skipped["zeroshot"] = str(content["skipped"])
    topk = None if skipped else zs.topk
    return configured_methods(heads, probes, topk), skipped


def read_json(path: Path) -> Any:
    """The contents of the JSON file ``path``.

    Raises:
        StoreError: not valid JSON.
    """
    from slidemil.core.errors import StoreError

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise StoreError(f"{path} is not valid JSON ({exc}); re-run the stage that wrote it") from exc


def _no_method_message(folder: Path, missing: list[str], ignored: list[str], skipped: dict[str, str]) -> str:
    text = (f"no evaluated method to report: none of the methods the params name has a metrics file in {folder}/ "
            f"({', '.join(missing) or 'none named'}). Run the evaluation stages first: `dvc repro` "
            "(or `slidemil train`, `slidemil probe`, `slidemil zeroshot`), then `slidemil report`.")
    if ignored:
        text += f" Ignored (not in the current params): {', '.join(ignored)}."
    if skipped:
        text += " Not run: " + "; ".join(f"{stage}: {reason}" for stage, reason in sorted(skipped.items())) + "."
    return text


def feature_weights(features: Path) -> dict[str, str]:
    """``{store path: weights_sha256}`` of the feature store ``features`` or of every ``*.zarr`` in it."""
    from slidemil.core.errors import StoreError
    from slidemil.extract.store import open_features

    stores = [features] if features.suffix == ".zarr" else sorted(features.glob("*.zarr"))
    weights = {}
    for path in stores:
        try:
            weights[str(path)] = str(open_features(path).weights_sha256 or "")
        except StoreError as exc:
            log.warning("cannot read feature store %s for its weights: %s", path, exc)
    return weights


def _log_mlflow(params: dict[str, Any], section: ReportSection, document: dict[str, Any],
                weights: dict[str, str], markdown: str, table, comparison, classes: list[str]) -> None:
    """The ``report`` run: the comparison tables as MLflow tables (viewable, comparable in the UI), the report
    files as artifacts; the report becomes the experiment's description (``mlflow.note.content``)."""
    from slidemil.pipeline.report import placeholder_stores
    from slidemil.pipeline.tracking import (
        VIEW_KEY,
        MlflowSection,
        experiment_name,
        parent_run,
        provenance_tags,
    )
    from slidemil.splits.task import load_task

    mlflow_section = read_section(params, "mlflow", MlflowSection)
    task = load_task(params)
    experiment = experiment_name(mlflow_section.experiment, task.label, classes, task.type, task.time, task.event)
    made_up = list(placeholder_stores(weights).values())
    tags = provenance_tags(weights_sha256=(made_up or list(weights.values()) or [None])[0])
    tags["report.best_method"] = document["best_method"]
    name = f"report · {len(table)} methods · best {document['best_method'] or 'n/a'}"
    with parent_run("report", "summary", {"report": section.model_dump(by_alias=True)}, tags, experiment,
                    mlflow_section.tracking_uri, run_name=name) as run:
        numbers = {k: v for k, v in document.items() if (k.startswith("best_test_") or k == "n_methods")
                   and v is not None}
        run.log_metrics(numbers)
        run.log_table(table.reset_index(), "tables/methods.json")
        if len(comparison):
            run.log_table(comparison.reset_index(), "tables/paired_comparison.json")
        for path in (section.output, section.json_path, section.comparison):
            run.log_artifact(path)
        view = f"[runs table with test metrics and CI](#/experiments/{run.experiment_id}/runs?viewStateShareKey={VIEW_KEY})"
        run.set_experiment_tags({"mlflow.note.content": f"Open the {view}.\n\n{markdown}"})
