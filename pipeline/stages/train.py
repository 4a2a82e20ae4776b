"""Train attention-MIL heads on the stored patch features, cross-validated on the splits' folds.

For each head (``--head NAME``, or every head of train.heads) and each fold of data/splits.json, a fresh
head is trained on the fold's training slides with early stopping on its validation slides, then
scored on its test slides. The leakage guard runs first (a patient in two parts of a fold, or a split
slide missing from the feature store, stops the stage).

Writes per head: models/<head>/fold-<k>.pt (best weights), metrics/train@<head>.json (headline test
metrics: mean over usable folds and 95% bootstrap intervals), predictions/train@<head>.csv and
.details.json (every metric's mean ± std and interval, per-fold values),
plots/train@<head>/roc.csv + confusion.csv, and MLflow runs (a parent per head holding params, tags
and summary; a child per fold with per-epoch curves, the best epoch's ``best/val_<metric>`` and
``best_epoch``, test metrics, figures, attention heatmaps (heads whose attention is not uniform) and the
model). A fold that fails (e.g. a non-finite loss, naming the slides) is marked FAILED and the other
folds go on; the exit code is 1 when a head has no usable fold.

Survival and regression tasks (``task.type``) train every head through the kind's objective
(slidemil.pipeline.kinds.objectives: train.survival_loss nll | cox with train.survival_bins, or
train.regression_loss mse | huber), with as many head outputs as the objective needs; their folds log a
Kaplan–Meier or scatter figure instead of ROC / confusion, and no MLflow model (weights and the objective's
state are in models/<head>/fold-<k>.pt). At ``task.level: patient`` a bag holds all slides of a patient.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, StrictBool

from slidemil.core.errors import ParamsError
from slidemil.core.params import read_section
from slidemil.pipeline.train_config import TrainConfig

HELP = "MIL heads on the feature store, cross-validated on the splits' folds → metrics/train@<head>.json"

class TrainSection(TrainConfig):
    """The ``train:`` params section: the trainer's hyper-parameters (:class:`TrainConfig`) and the stage's keys."""

    heads: list[str] = Field(["abmil"], min_length=1, description="MIL heads trained without --head "
                             "(slidemil train --help lists the registered ones)")
    features: str = Field("", description="feature store; empty: data/features/<extract.encoder>.zarr")
    splits: str = Field("data/splits.json", description="folds (split)")
    models: str = Field("models", description="best weights → <models>/<head>/fold-<k>.pt")
    head_kwargs: dict[str, dict[str, Any] | None] = Field(
        default_factory=dict, description="per-head options, e.g. {abmil: {hidden_dim: 256, dropout: 0.25}} "
        "(each head checks its own)")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$",
                        description="auto (cuda if available) | cpu | cuda | cuda:<i>")
    log_model: StrictBool = Field(True, description="mlflow.pytorch.log_model per fold (false: weights only "
                                  "under models/)")
    n_bootstrap: int = Field(1000, ge=0, description="bootstrap resamples of the pooled test predictions "
                             "(95% intervals; 0: none)")
    n_heatmaps: int = Field(2, ge=0, description="attention heatmaps of this many test slides per fold")
    survival_loss: Literal["nll", "cox"] = Field(
        "nll", description="survival: nll (discrete-time likelihood, Zadeh & Schmid 2021) | cox (partial "
        "likelihood of the batch)")
    survival_bins: int = Field(4, ge=2, description="survival nll: time bins cut at quantiles of the training "
                               "fold's event times")
    regression_loss: Literal["mse", "huber"] = Field(
        "mse", description="regression: mse | huber, on the target standardised on the training fold")


SECTION = TrainSection  # the CLI validates every stage's section before any stage works

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--head", default=None, help="train only this head (default: every one of train.heads)")


def run(params: dict[str, Any], args: argparse.Namespace) -> int:
    """Train and evaluate the heads; returns 0, or 1 when a head has no usable fold."""
    import torch

    from slidemil.pipeline.data import features_path, load_method_data
    from slidemil.splits.task import load_task

    section = read_section(params, "train", TrainSection)
    head_kwargs = section.head_kwargs
    heads = [args.head] if getattr(args, "head", None) else list(section.heads)
    check_heads(heads, head_kwargs)
    task = load_task(params)
    device = section.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    features = features_path(section.features, params)
    data = load_method_data(features, section.splits)  # runs the leakage guard
    bags, coords = _load_bags(data)
    log.info("train: %d bags from %s (%s), %d folds, heads %s on %s", len(bags), features,
             data.store.encoder_id, len(data.splits["folds"]), heads, device)
    status = 0
    for head in heads:
        job = HeadRun(head, head_kwargs.get(head) or {}, section, data, bags, coords, device)
        summary = _train_head(job, params, task)
        if not summary.get("test/n_usable_folds"):
            log.error("train@%s: no usable fold (see predictions/train@%s.details.json `folds` for the reasons)",
                      head, head)
            status = 1
    return status


def check_heads(heads: list[str], head_kwargs: dict[str, dict[str, Any]]) -> None:
    """Refuse unknown heads and head options before any work: each head is built once, small, with its
    ``train.head_kwargs`` (the CLI calls this for every stage, so a typo stops ``tile`` too).

    Raises:
        ParamsError: naming the unknown head or the option the head does not take.
    """
    from slidemil.mil_models import create_mil_model, list_mil_models

    unknown = [h for h in [*heads, *head_kwargs] if h not in list_mil_models()]
    if unknown or not heads:
        raise ParamsError(f"unknown or no MIL head {unknown or heads} in train.heads / train.head_kwargs; "
                          f"registered: {', '.join(list_mil_models())}")
    for head in heads:
        try:
            create_mil_model(head, in_dim=8, n_classes=2, **(head_kwargs.get(head) or {}))
        except (TypeError, ValueError) as exc:
            raise ParamsError(f"train.head_kwargs.{head}: {exc}") from None


def _load_bags(data) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every split unit's bag (float32 features on CPU; at patient level all its slides) with its target, and
    coords, read once for all heads and folds."""
    import numpy as np
    import torch

    from slidemil.pipeline.trainer import Bag

    bags, coords = {}, {}
    for sid in data.slides():
        features, xy = data.load(sid)
        bags[sid] = Bag(sid, torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)), data.targets[sid])
        coords[sid] = xy
    return bags, coords


@dataclass
class HeadRun:
    """What every fold of one head's cross-validation shares.

    Attributes:
        head, kwargs: registered MIL head and its options; section: the validated ``train:`` section;
        data: splits + feature store; bags, coords: every split slide's bag (features ``[N, D]``) and
        level-0 patch coordinates ``[N, 2]``; device: torch device.
    """

    head: str
    kwargs: dict[str, Any]
    section: TrainSection
    data: Any  # pipeline.data.MethodData
    bags: dict[str, Any]
    coords: dict[str, Any]
    device: str
    kind: Any = None  # pipeline.task_kinds.TaskKind
    model_dir: Path | None = None  # where this run writes fold-<k>.pt (a staging folder, see _train_head)


def _train_head(job: HeadRun, params: dict[str, Any], task) -> dict[str, float]:
    from slidemil.pipeline.crossval import cross_validate, tracking_for
    from slidemil.pipeline.kinds import kind_for
    from slidemil.pipeline.task_kinds import Bootstrap

    job.kind = kind_for(params, task, job.data)
    tracking = tracking_for(params, job.data, head_params(job), shown={"train.lr": "lr", "train.epochs": "epochs"})
    # fold models go to a staging folder that replaces models/<head>/ only once every fold is done: an
    # interrupted run never leaves a mix of new and old fold models for deploy and heatmap to use
    final = Path(job.section.models) / job.head
    job.model_dir = final.with_name(f".{job.head}.partial")
    shutil.rmtree(job.model_dir, ignore_errors=True)
    job.model_dir.mkdir(parents=True)
    summary = cross_validate("train", job.head, job.data, lambda fold, child: _train_fold(job, fold, child),
                             kind=job.kind, tracking=tracking,
                             bootstrap=Bootstrap(job.section.n_bootstrap, job.section.seed), fold_figures=True)
    old = final.with_name(f".{job.head}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    job.model_dir.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return summary


def head_params(job: HeadRun) -> dict[str, Any]:
    """The params of one head's runs: the ``train:`` section without the list of other heads, this head's
    options, the head and the feature store."""
    own = job.section.model_dump(exclude={"heads", "head_kwargs"})
    return {"train": {**own, "head_kwargs": job.kwargs}, "head": job.head, "features": str(job.data.store.path),
            "method": f"train@{job.head}"}


def _train_fold(job: HeadRun, fold: dict[str, Any], child):
    """Train and score one fold, log its curves, best epoch, weights, heatmaps and model on ``child``.

    Returns a FoldResult whose ``info`` holds the best epoch's ``val/*`` (kept per fold in
    predictions/train@<head>.details.json), ``best_epoch`` and ``epochs_run``.
    """
    import numpy as np
    import torch

    from slidemil.core.atomic import atomic_path
    from slidemil.mil_models import create_mil_model
    from slidemil.pipeline.crossval import FoldResult
    from slidemil.pipeline.figures import is_informative
    from slidemil.pipeline.provenance import provenance_from_store
    from slidemil.pipeline.tracking import fold_name
    from slidemil.pipeline.trainer import BagProbabilities, EpochProgress, predict, train_fold

    section, data, bags, device = job.section, job.data, job.bags, job.device
    cfg = TrainConfig.model_validate({**section.model_dump(include=set(TrainConfig.model_fields)), "device": device})
    in_dim, n_classes = int(data.store.embed_dim or next(iter(bags.values())).features.shape[1]), len(data.classes)
    objective = None
    if job.kind is not None and job.kind.name != "classification":
        objective = job.kind.objective(job.kind.targets(data, fold["train"]), section)
        n_classes = objective.n_outputs

    def build():
        return create_mil_model(job.head, in_dim=in_dim, n_classes=n_classes, **job.kwargs)

    def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
        child.log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step=epoch)

    with EpochProgress(cfg.epochs, f"{job.head} fold {fold['fold']}", cfg.monitor) as progress:
        result = train_fold(build, [bags[s] for s in fold["train"]], [bags[s] for s in fold["val"]], n_classes,
                            cfg, callbacks=[log_epoch, progress], objective=objective)
    test = list(fold["test"])
    pred = predict(result.model, [bags[s] for s in test], cfg.batch_size, device, cfg.amp, objective)
    outputs = pred.proba
    if objective is not None:  # the kind's outputs need the training slides' predictions (risk-group cut)
        trained = predict(result.model, [bags[s] for s in fold["train"]], cfg.batch_size, device, cfg.amp, objective)
        outputs = job.kind.outputs(pred.proba, trained.proba)
    best = {k: v for k, v in result.history[result.best_epoch].items() if k.startswith("val/")}
    extra = {"best_epoch": result.best_epoch, "epochs_run": len(result.history)}
    # the best epoch's val/* values are already points of the per-epoch curves: logged again under
    # best/val_<metric>, not as val/<metric> (which would add a stray point to the curves)
    child.log_metrics({**extra, **{f"best/val_{k[4:]}": v for k, v in best.items()}})
    child.set_tags({"monitor": result.monitor, "stopped_early": result.stopped_early})
    k, repeat = int(fold["fold"]), int(fold.get("repeat", 0))
    name = fold_name(k, repeat)
    with atomic_path(job.model_dir / f"{name}.pt") as tmp:
        torch.save({"head": job.head, "head_kwargs": job.kwargs, "in_dim": in_dim, "classes": data.classes,
                    "state_dict": result.model.state_dict(), "best_epoch": result.best_epoch,
                    "task_kind": job.kind.name if job.kind is not None else "classification",
                    "objective": {"class": type(objective).__name__, **vars(objective)} if objective else None,
                    "fold": k, "repeat": repeat, "test": test, "mlflow_run_id": child.run_id,
                    "provenance": provenance_from_store(data.store, fold["train"][0])}, tmp)
    n_heatmaps = 0 if data.members else section.n_heatmaps  # patient bags mix slides: no one thumbnail
    for i in range(min(n_heatmaps, len(test))):
        if not is_informative(pred.attention[i]):
            log.debug("%s %s: no attention heatmap of %s (the head gives no or uniform attention)", job.head, name,
                      test[i])
            continue
        label = data.classes[pred.y_true[i]] if objective is None else str(np.round(pred.y_true[i], 3).tolist())
        _log_heatmap(child, data.store, test[i], job.coords[test[i]], pred.attention[i], label, f"{job.head} {name}")
    model_id = None
    if section.log_model and objective is None:  # the served model returns class probabilities
        # linked to the best epoch's train/val metrics, and to the test metrics later (FoldResult.model_id)
        model_id = child.log_model(BagProbabilities(result.model.cpu()), in_dim, n_classes, child.tracking,
                                   name=f"{job.head}-{name}", step=result.best_epoch, params=head_params(job))
    return FoldResult(test, pred.y_true, outputs, info={**best, **extra}, model_id=model_id)


def _log_heatmap(run, store, slide_id: str, coords, attention, label: str, method: str) -> None:
    """Attention percentiles over the slide's thumbnail (the `slidemil heatmap` drawing); blank canvas if unreadable.

    ``method`` (e.g. ``abmil fold-0``) and the slide are named in the title."""
    from slidemil.pipeline.heatmaps import percentiles, slide_heatmap_figure

    fig, problem = slide_heatmap_figure(store.attrs(slide_id), coords, percentiles(attention),
                                        title=f"{method} · {slide_id} (label {label})")
    if problem:
        log.warning("heatmap of %s drawn without its thumbnail: %s", slide_id, problem)
    run.log_figure(fig, f"heatmaps/{slide_id}.png")
