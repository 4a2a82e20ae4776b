"""The fold models of a trained head, loaded from ``models/<head>/`` or from MLflow, and their ensemble.

Cross-validation leaves one model per fold; outside the folds every one of them predicts and the ensemble
is their mean. A model comes from a checkpoint ``models/<head>/fold-<k>.pt`` written by ``slidemil train``
(which also records its training provenance and MLflow run), or from an MLflow URI: ``runs:/<run_id>``
(a ``train@<head>`` parent run: every fold run under it; or one fold run), ``runs:/<run_id>/model`` or
``models:/<name>/<version>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slidemil.core.errors import SlidemilError

TASK_KINDS = ("classification",)


class ModelSourceError(SlidemilError):
    """No fold model could be loaded from the given folder or MLflow URI."""


@dataclass
class FoldModel:
    """One trained fold model of a head.

    Attributes:
        name: ``fold-<k>`` (or ``repeat-<r>-fold-<k>``; MLflow: the run name); model: the head, eval mode, CPU.
        classes: output names in column order; kind: the task kind (``classification``).
        provenance: training provenance (``pipeline.provenance.provenance_from_store``) or None (MLflow models).
        run_id: MLflow run of the fold (None when unknown); test: the slides of its CV test fold ([] if unknown).
    """

    name: str
    model: nn.Module
    classes: list[str]
    kind: str = "classification"
    provenance: dict[str, Any] | None = None
    run_id: str | None = None
    test: list[str] = field(default_factory=list)


def load_fold_models(head: str, source: str, classes: Sequence[str] = (), tracking: str = "") -> list[FoldModel]:
    """Every fold model of ``head`` from a models folder or an MLflow URI.

    Args:
        head: the MIL head's name; source: folder holding ``<head>/*.pt``, or ``runs:/…`` / ``models:/…``;
        classes: class names for MLflow models (checkpoints carry their own); tracking: MLflow tracking URI.

    Raises:
        ModelSourceError: nothing to load, naming where it looked and what to run.
    """
    if source.startswith(("runs:/", "models:/")):
        return _from_mlflow(source, list(classes), tracking)
    folder = Path(source) / head
    paths = sorted(folder.glob("*.pt"))
    if not paths:
        raise ModelSourceError(f"no fold models of head {head!r} in {folder}; run `slidemil train --head {head}` "
                               "or give an MLflow URI (runs:/<run_id>)")
    return [load_checkpoint(p) for p in paths]


def load_checkpoint(path: str | Path) -> FoldModel:
    """A fold model from a ``slidemil train`` checkpoint (``torch.save`` dict with ``head``, ``state_dict``…).

    Raises:
        ModelSourceError: unreadable file, or a task kind this version cannot apply.
    """
    from slidemil.mil_models import create_mil_model

    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        model = create_mil_model(ckpt["head"], in_dim=int(ckpt["in_dim"]), n_classes=len(ckpt["classes"]),
                                 **(ckpt.get("head_kwargs") or {}))
        model.load_state_dict(ckpt["state_dict"])
    except (OSError, KeyError, RuntimeError, ValueError) as exc:
        raise ModelSourceError(f"{path}: not a readable slidemil fold checkpoint ({exc}); retrain the head") from exc
    kind = ckpt.get("task_kind", "classification")
    if kind not in TASK_KINDS:
        raise ModelSourceError(f"{path}: task kind {kind!r} cannot be deployed by this version ({TASK_KINDS})")
    return FoldModel(path.stem, model.eval(), list(ckpt["classes"]), kind, ckpt.get("provenance"),
                     ckpt.get("mlflow_run_id"), list(ckpt.get("test") or []))


def _from_mlflow(uri: str, classes: list[str], tracking: str) -> list[FoldModel]:
    import mlflow.pytorch
    from mlflow import MlflowClient

    from slidemil.pipeline.tracking import tracking_uri

    if not classes:
        raise ModelSourceError(f"{uri}: class names unknown; give train.splits (its classes order the outputs)")
    uri_resolved = tracking_uri(tracking)
    mlflow.set_tracking_uri(uri_resolved)
    client = MlflowClient(uri_resolved)
    targets: list[tuple[str, str, str | None]] = []  # (name, model URI, run_id)
    parts = uri.removeprefix("runs:/").split("/", 1)
    if uri.startswith("runs:/") and len(parts) == 1:
        run = client.get_run(parts[0])
        children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{parts[0]}'",
                                      order_by=["attributes.run_name ASC"])
        for r in children or [run]:
            targets.append((_fold_label(r), _model_uri(r), r.info.run_id))
    else:
        run_id = parts[0] if uri.startswith("runs:/") else None
        targets.append((uri.rsplit("/", 2)[-2] if uri.startswith("models:/") else f"run-{run_id}", uri, run_id))
    models = []
    for name, model_uri, run_id in targets:
        try:
            wrapped = mlflow.pytorch.load_model(model_uri, map_location="cpu")
        except Exception as exc:  # noqa: BLE001 — MLflow raises its own and OSError; name the URI either way
            raise ModelSourceError(f"{model_uri}: cannot load an MLflow model ({type(exc).__name__}: {exc}); "
                                   "was train.log_model true?") from exc
        head = getattr(wrapped, "head", wrapped)  # BagProbabilities wraps the MIL head
        models.append(FoldModel(name, head.eval(), classes, run_id=run_id))
    return models


def _fold_label(run) -> str:
    """``fold-<k>`` of a fold run (its ``fold``/``repeat`` tags), else the run's name."""
    from slidemil.pipeline.tracking import fold_name

    tags = run.data.tags
    if "fold" in tags:
        return fold_name(int(tags["fold"]), int(tags.get("repeat", 0) or 0))
    return run.info.run_name or run.info.run_id


def _model_uri(run) -> str:
    """The model a run logged: its MLflow 3 LoggedModel (``models:/<model_id>``, whatever its name), else the
    run's ``model`` artifact path (stores written before models had names)."""
    import mlflow

    found = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id],
                                        filter_string=f"source_run_id = '{run.info.run_id}'", output_format="list")
    return f"models:/{found[0].model_id}" if found else f"runs:/{run.info.run_id}/model"


def ensemble_predict(models: Sequence[FoldModel], bags: Sequence[Any], device: str = "cpu",
                     batch_size: int = 4) -> np.ndarray:
    """Every fold model's outputs on every bag: ``[F, n, C]`` (class probabilities for classification).

    Args:
        models: fold models; bags: ``pipeline.trainer.Bag`` s (labels ignored).
    """
    from slidemil.pipeline.trainer import predict

    out = []
    for fold_model in models:
        fold_model.model.to(device)
        out.append(predict(fold_model.model, list(bags), batch_size, device, amp=True).proba)
        fold_model.model.cpu()
    return np.stack(out) if out else np.zeros((0, len(bags), 0))
