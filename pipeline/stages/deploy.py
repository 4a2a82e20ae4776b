"""Deploy: apply every fold model of the trained heads to a new (external) cohort.

The new cohort (``--cohort FILE`` or deploy.cohort; the stage does nothing while it is empty) is tiled and
encoded with exactly the tiling and encoder of the models' training features, read from their provenance
(the fold checkpoints, else the training feature store), not from today's params: into
``<deploy.output>/tiles`` and ``<deploy.output>/features`` (default output ``deploy/<cohort file stem>/``),
with the same resume, per-slide status and manifests as `slidemil tile` / `slidemil extract`. A feature
store given instead (``--features``) is used only if its encoder, weights digest, patch size and mpp match.

Every fold model of each head (deploy.heads, default train.heads; from train.models or an MLflow URI in
deploy.model_uris) predicts every slide. Writes under the output folder:

  predictions.csv             one row per slide and head: each fold model's outputs and the ensemble mean
  status.csv                  one row per cohort slide: tiling / encoding status, predicted or why not
  metrics/deploy@<head>.json  (labelled slides only) the CV metrics with 95% bootstrap intervals of the
                              ensemble; predictions/deploy@<head>.csv, plots/deploy@<head>/ (the task kind's
                              DVC plot data and figures, e.g. roc.csv, roc.png, confusion.png)
and one MLflow run ``deploy@<head>`` per head in the training experiment, tagged with the cohort's
digest and the trained parent run. Patients also in the training cohort are named in a warning and left
out of the metrics (deploy.exclude_training_patients). Exit status 1 when no slide could be predicted.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from pydantic import Field, StrictBool

from slidemil.core.errors import ParamsError, StoreError
from slidemil.core.params import Section, read_section

HELP = "apply the trained fold models to a new cohort (tiled/encoded as in training) → deploy/<cohort>/"

log = logging.getLogger(__name__)


class DeploySection(Section):
    """The ``deploy:`` params section."""

    cohort: str = Field("", description="cohort table of the new slides; empty: the stage does nothing")
    output: str = Field("", description="output folder; empty: deploy/<cohort file stem>")
    heads: list[str] = Field(default_factory=list, description="heads to deploy; empty: train.heads")
    models: str = Field("", description="folder of <head>/fold-<k>.pt; empty: train.models")
    model_uris: dict[str, str] = Field(default_factory=dict, description="per head an MLflow URI (runs:/<run_id>, "
                                       "runs:/<run_id>/model, models:/<name>/<version>) used instead of the folder")
    features: str = Field("", description="a feature store of the cohort to use instead of tiling and encoding "
                          "(refused unless encoder, weights, patch size and mpp match the models')")
    exclude_training_patients: StrictBool = Field(True, description="leave patients of the training cohort out "
                                                  "of the metrics (they are always named in a warning)")
    n_bootstrap: int = Field(1000, ge=0, description="bootstrap resamples of the ensemble's predictions (95% CI)")
    seed: int = Field(0, description="seed of the bootstrap")
    device: str = Field("auto", description="auto (cuda if available) | cpu | cuda | cuda:<i>")
    batch_size: int = Field(4, ge=1, description="bags per forward pass")


SECTION = DeploySection  # the CLI validates every stage's section before any stage works


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cohort", default=None, help="cohort table of the new slides (overrides deploy.cohort)")
    parser.add_argument("--features", default=None, help="feature store of the cohort (overrides deploy.features)")
    parser.add_argument("--head", action="append", default=None, help="deploy this head (repeatable; "
                        "default: deploy.heads, else train.heads)")


def run(params: dict[str, Any], args: argparse.Namespace) -> int:
    """Deploy the heads on the cohort; returns 0, or 1 when no slide could be predicted."""
    from slidemil.core.atomic import write_json

    section = read_section(params, "deploy", DeploySection)
    cohort = getattr(args, "cohort", None) or section.cohort
    if not cohort:
        log.info("deploy: deploy.cohort is empty, nothing to deploy (give --cohort FILE)")
        write_json(Path("deploy") / "last.json", {"cohort": "", "output": ""})
        return 0
    if not Path(cohort).is_file():
        raise ParamsError(f"deploy cohort table {cohort} not found; give --cohort FILE or set deploy.cohort")
    features = getattr(args, "features", None) or section.features
    output = Path(section.output or Path("deploy") / Path(cohort).stem)
    heads = list(getattr(args, "head", None) or section.heads or train_section(params).heads)
    validate_heads(heads)
    status = _deploy(params, section, Path(cohort), features, output, heads)
    write_json(Path("deploy") / "last.json", {"cohort": str(cohort), "output": str(output)})
    return status


def train_section(params: dict[str, Any]):
    """The validated ``train:`` section (heads, splits, models, features of the trained models)."""
    from slidemil.pipeline.stages.train import TrainSection

    return read_section(params, "train", TrainSection)


def _deploy(params, section: DeploySection, cohort_path: Path, features: str, output: Path, heads: list[str]) -> int:
    import pandas as pd

    from slidemil.core.atomic import write_csv
    from slidemil.extract.store import open_features
    from slidemil.pipeline.data import features_path
    from slidemil.pipeline.ensemble import load_fold_models
    from slidemil.pipeline.provenance import check_features, provenance_from_store
    from slidemil.splits.cohort import load_cohort
    from slidemil.splits.io import load_splits

    cohort = load_cohort(cohort_path)
    train = train_section(params)
    splits_path = Path(train.splits)
    splits = load_splits(splits_path) if splits_path.is_file() else None
    classes = list(splits["classes"]) if splits else []
    models = {h: load_fold_models(h, section.model_uris.get(h) or section.models or train.models, classes,
                                  _mlflow(params).tracking_uri) for h in heads}
    provenance = common_provenance(models)
    if provenance is None:  # MLflow models: the training store's attrs
        store = open_features(features_path(train.features, params))
        training_slides = sorted(splits["labels"]) if splits else store.slide_ids
        provenance = provenance_from_store(store, next(s for s in training_slides if s in store))
    if features:
        store = open_features(features)
        for slide_id in store.slide_ids:
            check_features(provenance, store, slide_id)
        manifests = pd.DataFrame({"slide_id": store.slide_ids, "status": "ok", "reason": "given feature store"})
    else:
        store, manifests = _tile_and_encode(params, provenance, cohort_path, output)
        check_features(provenance, store)
    slide_table = _status_table(cohort, manifests, store)
    write_csv(output / "status.csv", slide_table)
    ok = slide_table.loc[slide_table["status"] == "predicted", "slide_id"].tolist()
    log.info("deploy: %d of %d cohort slides have features (%s); heads %s", len(ok), len(cohort), store.path, heads)
    if not ok:
        log.error("deploy: no slide of %s could be encoded; see %s", cohort_path, output / "status.csv")
        return 1
    tables = [_deploy_head(h, models[h], params, section, cohort, cohort_path, splits, store, ok, output)
              for h in heads]
    write_csv(output / "predictions.csv", pd.concat(tables, ignore_index=True))
    log.info("deploy: predictions of %d slides × %d heads → %s", len(ok), len(heads), output / "predictions.csv")
    return 0


def common_provenance(models) -> dict[str, Any] | None:
    """The one training provenance of all fold models (None when no checkpoint records one).

    Raises:
        ProvenanceError: two fold models were trained on features of different encoders, weights or tiling.
    """
    from slidemil.pipeline.provenance import ProvenanceError

    seen: dict[tuple, str] = {}
    for head, fold_models in models.items():
        for m in fold_models:
            if m.provenance:
                key = (m.provenance["encoder_id"], m.provenance["weights_sha256"],
                       (m.provenance.get("tiling") or {}).get("params_digest"))
                seen.setdefault(key, f"{head}/{m.name}")
    if len(seen) > 1:
        raise ProvenanceError("the fold models were trained on different features: " + "; ".join(
            f"{where}: encoder {k[0]}, weights {k[1]}, tiling digest {k[2]}" for k, where in seen.items())
            + "; deploy them in separate runs (--head)")
    return next((m.provenance for ms in models.values() for m in ms if m.provenance), None)


def _mlflow(params: dict[str, Any]):
    from slidemil.pipeline.tracking import MlflowSection

    return read_section(params, "mlflow", MlflowSection)


def _tile_and_encode(params, provenance, cohort_path: Path, output: Path):
    """Run the tile and extract stages on the cohort with the training tiling and encoder; returns (store, manifest)."""
    import pandas as pd

    from slidemil.extract.sections import ExtractSection, TileSection
    from slidemil.extract.store import open_features, store_path
    from slidemil.pipeline.provenance import extract_section, tile_section
    from slidemil.pipeline.stages import extract, tile

    tiles = output / "tiles"
    tile_params = {**tile_section(provenance, read_section(params, "tile", TileSection)), "output": str(tiles)}
    tile.run({"cohort": str(cohort_path), "tile": tile_params}, argparse.Namespace(force=False))
    extract_params = {**extract_section(provenance, read_section(params, "extract", ExtractSection)),
                      "tiles": str(tiles), "output": str(output / "features"), "fail_if": "never"}
    extract.run({"extract": extract_params}, argparse.Namespace(force=False, list_encoders=False))
    read = {"dtype": {"slide_id": str, "reason": str}, "keep_default_na": False}
    manifest = pd.read_csv(output / "features" / "manifest.csv", **read)
    tiling = pd.read_csv(tiles / "manifest.csv", **read).set_index("slide_id")
    # a slide that tiling did not pass on gets the tile stage's status and words (extract only says "skipped")
    untiled = manifest["slide_id"].map(lambda s: s in tiling.index and tiling.at[s, "status"] not in ("ok", "no_tissue"))
    manifest.loc[untiled, "status"] = [tiling.at[s, "status"] for s in manifest.loc[untiled, "slide_id"]]
    manifest.loc[untiled, "reason"] = [f"tiling: {tiling.at[s, 'reason']}" for s in manifest.loc[untiled, "slide_id"]]
    try:
        store = open_features(store_path(output / "features", provenance["encoder_id"]))
    except StoreError:  # nothing encoded: an empty store so the status table still gets written
        from slidemil.extract.store import FeatureStoreWriter

        path = store_path(output / "features", provenance["encoder_id"])
        FeatureStoreWriter(path, provenance["encoder_id"], provenance["weights_sha256"], provenance["embed_dim"])
        store = open_features(path)
    return store, manifest


def _status_table(cohort, manifest, store):
    """One row per cohort slide: patient_id, status (``predicted`` or the tiling/encoding status) and reason."""
    import pandas as pd

    rows = manifest.set_index("slide_id")
    available = set(store.slide_ids)
    out = []
    for slide in cohort.itertuples(index=False):
        sid = slide.slide_id
        status = str(rows.at[sid, "status"]) if sid in rows.index else "missing"
        reason = str(rows.at[sid, "reason"]) if sid in rows.index else "not in the feature store"
        if sid in available and status == "ok" and store.attrs(sid).get("n_patches", 0) > 0:
            status = "predicted"
        out.append({"slide_id": sid, "patient_id": slide.patient_id, "status": status, "reason": reason})
    return pd.DataFrame(out, columns=["slide_id", "patient_id", "status", "reason"])


def _deploy_head(head, fold_models, params, section, cohort, cohort_path, splits, store, slide_ids, output):
    """Predict with every fold model of one head, score labelled slides, track the run; returns the wide table."""
    import numpy as np
    import pandas as pd
    import torch

    from slidemil.pipeline.deploy import predictions_wide, training_overlap
    from slidemil.pipeline.ensemble import ensemble_predict
    from slidemil.pipeline.tracking import (
        experiment_name,
        file_digest,
        json_digest,
        parent_run,
        provenance_tags,
    )
    from slidemil.pipeline.trainer import Bag
    from slidemil.splits.task import load_task

    classes, kind = fold_models[0].classes, fold_models[0].kind
    by_id = cohort.set_index("slide_id")
    patients = [str(by_id.at[s, "patient_id"]) for s in slide_ids]
    task = load_task(params)
    labels = [str(by_id.at[s, task.label]) if task.label in by_id.columns else "" for s in slide_ids]
    labels = [lab if lab in classes else "" for lab in labels]
    bags = [Bag(s, torch.from_numpy(np.ascontiguousarray(store.load_features(s), dtype=np.float32)), 0) for s in slide_ids]
    device = section.device if section.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    outputs = ensemble_predict(fold_models, bags, device, section.batch_size)  # (F, n, C)
    names = [m.name for m in fold_models]
    wide = predictions_wide(head, slide_ids, patients, labels, names, outputs, classes, kind)

    overlap = training_overlap(dict(zip(slide_ids, patients, strict=True)), list((splits or {}).get("patients", {}).values()))
    if overlap:
        log.warning("!!! deploy@%s: %d patient(s) of %s were in the TRAINING cohort: %s%s !!!", head, len(overlap),
                    cohort_path, ", ".join(f"{p} (slides {', '.join(s)})" for p, s in overlap.items()),
                    "; left out of the metrics" if section.exclude_training_patients else "; kept in the metrics")
    wide["in_training_cohort"] = [p in overlap for p in patients]
    scored = np.array([bool(lab) and not (section.exclude_training_patients and p in overlap)
                       for lab, p in zip(labels, patients, strict=True)])
    mlflow_section = _mlflow(params)
    experiment = experiment_name(mlflow_section.experiment, (splits or {}).get("label") or task.label,
                                 (splits or {}).get("classes") or classes, task.type, task.time, task.event)
    tags = {**provenance_tags(weights_sha256=store.weights_sha256, encoder_id=store.encoder_id,
                              features_digest=json_digest({s: store.attrs(s) for s in slide_ids})),
            "deploy.cohort": str(cohort_path), "deploy.cohort_digest": file_digest(cohort_path),
            "deploy.n_slides": len(slide_ids), "deploy.n_training_patients": len(overlap)}
    logged = {"deploy": section.model_dump(), "head": head, "cohort": str(cohort_path), "folds": names}
    with parent_run("deploy", head, logged, tags, experiment, mlflow_section.tracking_uri) as run:
        run.set_tags({"trained_run_id": _trained_run(run.client, fold_models)})
        if scored.sum():
            _score(head, fold_models, outputs[:, scored], np.asarray(slide_ids)[scored], np.asarray(patients)[scored],
                   np.asarray(labels)[scored], task, section, output, run)
        path = output / "predictions" / f"deploy@{head}.wide.csv"
        from slidemil.core.atomic import write_csv

        write_csv(path, wide)
        run.log_artifact(path)
    return pd.DataFrame(wide)


def _score(head, fold_models, outputs, slide_ids, patients, labels, task, section, output, run):
    """Metrics of the labelled slides exactly as in CV, through the models' task kind
    (:mod:`slidemil.pipeline.task_kinds`): per fold model, and the ensemble with bootstrap CIs.

    Args:
        outputs: ``[F, n, C]`` of the ``n`` labelled slides; labels: their class names ``(n,)``.
    """
    from types import SimpleNamespace

    import numpy as np
    import pandas as pd

    from slidemil.pipeline.task_kinds import TASK_KINDS, Bootstrap

    classes = fold_models[0].classes
    kind = TASK_KINDS.get(fold_models[0].kind)(task, SimpleNamespace(classes=classes))
    y = np.array([classes.index(lab) for lab in labels])  # classification labels; kinds with other targets: here
    tables, fold_metrics = [], []
    for k, (fold_model, fold_outputs) in enumerate(zip(fold_models, outputs, strict=True)):
        tables.append(kind.predictions_table(slide_ids, patients, y, fold_outputs, k, 0))
        fold_metrics.append({"fold": k, "model": fold_model.name, "status": "ok",
                             **kind.fold_metrics(y, fold_outputs)})
    long = pd.concat(tables, ignore_index=True)
    summary = kind.finish("deploy", head, long, fold_metrics, Bootstrap(section.n_bootstrap, section.seed), output)
    run.log_metrics(summary)
    y_pooled, pooled = kind.pooled(long)
    title = f"deploy@{head}: ensemble of {len(fold_models)} fold models"
    for artifact, figure in kind.figures(y_pooled, pooled, title, "deploy").items():
        figure.savefig(output / "plots" / f"deploy@{head}" / Path(artifact).name, dpi=100)
        run.log_figure(figure, artifact)
    log.info("deploy@%s on %d labelled slides: %s", head, len(y), kind.headline(summary))
    return summary


def _trained_run(client, fold_models) -> str:
    """The ``train@<head>`` parent run of the fold models ("unknown" when the store does not hold it)."""
    for fold_model in fold_models:
        if not fold_model.run_id:
            continue
        try:
            run = client.get_run(fold_model.run_id)
        except Exception:  # noqa: BLE001 — MLflow raises its own exception for a run of another store
            continue
        return run.data.tags.get("mlflow.parentRunId", fold_model.run_id)
    return "unknown"


def validate_heads(heads: list[str]) -> None:
    """Raise ParamsError for a head that is not registered."""
    from slidemil.mil_models import list_mil_models

    unknown = [h for h in heads if h not in list_mil_models()]
    if unknown:
        raise ParamsError(f"unknown MIL head(s) {unknown} in deploy.heads; registered: {', '.join(list_mil_models())}")
