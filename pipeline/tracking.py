"""MLflow tracking shared by every evaluated method (train, probe, zero-shot, report).

Layout (DESIGN.md): one experiment per task; a parent run per configuration (stage, head or probe,
encoder) holding the flattened params, the provenance tags and the cross-validated summary; one child
run per fold (tag ``fold``) with per-epoch ``train/*`` / ``val/*`` metrics, the fold's ``test/*``
metrics and its artifacts.

Everything goes through :class:`mlflow.MlflowClient` with explicit run IDs (no global active run),
metrics are buffered and sent with ``log_batch`` so tracking stays a small share of wall time, and the
seconds spent in MLflow are counted (:attr:`Run.seconds`) so the stage can report that share.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import Field

from slidemil.core.hashing import file_sha256, json_sha256
from slidemil.core.params import Section


class MlflowSection(Section):
    """The ``mlflow:`` params section."""

    experiment: str = Field("", description="experiment name; empty: the task's label column")
    tracking_uri: str = Field("", description="tracking store; empty: env MLFLOW_TRACKING_URI, else "
                              "sqlite:///<repo root>/mlflow.db")


_ROOT_MARKERS = ("params.yaml", "dvc.yaml")
_BATCH_METRICS = 1000  # MLflow's log_batch limit per request
_BATCH_PARAMS = 100
_PARAM_VALUE_MAX = 6000


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The project folder: the first of ``start`` (default: cwd) and its parents holding params.yaml or dvc.yaml.

    Falls back to ``start`` itself. Always absolute. Under DVC (env ``DVC_ROOT``) it is the original repo, also
    for ``dvc exp run --temp`` and queued experiments, so every experiment lands in the same MLflow store.
    """
    # DVC sets DVC_ROOT for stage commands to the original repo, also when an experiment runs in a
    # temporary copy (`dvc exp run --temp`, the queue): every experiment then tracks into one store
    if start is None and os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if any((folder / marker).is_file() for marker in _ROOT_MARKERS):
            return folder
    return here


def tracking_uri(configured: str = "", root: str | os.PathLike | None = None) -> str:
    """``configured`` if set, else env ``MLFLOW_TRACKING_URI``, else absolute ``sqlite:///<root>/mlflow.db``."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{repo_root(root) / 'mlflow.db'}"


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    return file_sha256(path)


def json_digest(obj: Any) -> str:
    """SHA-256 (hex) of ``obj`` as canonical JSON (sorted keys, compact); e.g. a store's per-slide attrs."""
    return json_sha256(obj, compact=True)


def git_commit(root: str | os.PathLike | None = None) -> str:
    """The checked-out commit of the repo at ``root`` (``-dirty`` appended with local changes), or ``unknown``."""
    cwd = repo_root(root)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def provenance_tags(
    weights_sha256: str | None = None,
    features_digest: str | None = None,
    splits_digest: str | None = None,
    encoder_id: str | None = None,
    root: str | os.PathLike | None = None,
) -> dict[str, str]:
    """Tags every parent run carries: git commit, DVC experiment name, encoder weights hash, data digests.

    ``encoder.weights=synthetic`` marks runs on made-up encoder weights (``weights_sha256`` starting with
    ``synthetic`` — the generated CONCH checkpoint — or ``random`` — test encoders), so nobody mistakes
    them for real results.
    """
    tags = {"git.commit": git_commit(root)}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    if encoder_id:
        tags["encoder.id"] = encoder_id
    if weights_sha256:
        tags["encoder.weights_sha256"] = weights_sha256
        tags["encoder.weights"] = "synthetic" if weights_sha256.startswith(("synthetic", "random")) else "real"
    if features_digest:
        tags["features.digest"] = features_digest
    if splits_digest:
        tags["splits.digest"] = splits_digest
    return tags


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params → ``{"train.lr": "0.0001", …}`` (lists and values as text, JSON for lists)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, (list, tuple, Mapping)) else str(value)
            out[name] = text[:_PARAM_VALUE_MAX]
    return out


class Run:
    """One MLflow run addressed by ID; metrics are buffered and sent in batches.

    Attributes:
        run_id: the MLflow run ID; tracking: the store's URI.
        seconds: wall seconds spent in MLflow calls through this object (and its children).
    """

    def __init__(self, client, run_id: str, clock: list[float], tracking: str = "") -> None:
        self.client = client
        self.run_id = run_id
        self.tracking = tracking  # the store's URI (for mlflow.pytorch.log_model)
        self._clock = clock  # shared by a parent and its children: [seconds]
        self._buffer: list = []

    @property
    def seconds(self) -> float:
        return self._clock[0]

    @contextmanager
    def _timed(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._clock[0] += time.perf_counter() - start

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Buffer ``metrics`` (sent by :meth:`flush`, automatically when 1,000 are waiting and at run end).

        NaN values are kept (MLflow stores them); non-numeric values are skipped.
        """
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._buffer.append(Metric(key=key, value=float(value), timestamp=stamp, step=step or 0))
        if len(self._buffer) >= _BATCH_METRICS:
            self.flush()

    def flush(self) -> None:
        """Send the buffered metrics with ``log_batch`` (chunks of 1,000)."""
        with self._timed():
            while self._buffer:
                chunk, self._buffer = self._buffer[:_BATCH_METRICS], self._buffer[_BATCH_METRICS:]
                self.client.log_batch(self.run_id, metrics=chunk)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log flattened ``params`` once (MLflow params are immutable)."""
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(params).items()]
        with self._timed():
            for i in range(0, len(items), _BATCH_PARAMS):
                self.client.log_batch(self.run_id, params=items[i : i + _BATCH_PARAMS])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags in one batch."""
        from mlflow.entities import RunTag

        with self._timed():
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_figure(self, figure, artifact_file: str) -> None:
        """Store a matplotlib figure as ``artifact_file`` (e.g. ``figures/roc.png``) and close it."""
        import matplotlib.pyplot as plt

        with self._timed():
            self.client.log_figure(self.run_id, figure, artifact_file)
        plt.close(figure)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Copy a local file into the run's artifacts (under ``artifact_path``)."""
        with self._timed():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store ``text`` as ``artifact_file``."""
        with self._timed():
            self.client.log_text(self.run_id, text, artifact_file)

    def log_model(self, model, in_dim: int, n_outputs: int, tracking: str, name: str = "model") -> None:
        """Log a torch model with ``mlflow.pytorch.log_model``; its signature accepts any bag size.

        ``model`` maps float32 ``[B, N, D]`` to ``[B, C]`` (input spec ``(-1, -1, in_dim)``, output
        ``(-1, n_outputs)``). Pip requirements are given, not inferred, to keep the call cheap.
        """
        import mlflow
        import mlflow.pytorch
        import numpy as np
        import torch
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, int(in_dim)), "bag")]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, int(n_outputs)), "probabilities")]),
        )
        with self._timed(), _quiet("mlflow.pytorch", "mlflow.utils.requirements_utils"):
            mlflow.set_tracking_uri(tracking)
            with mlflow.start_run(run_id=self.run_id):
                # pickle: the model is our own nn.Module (MLflow 3's pt2 format needs an input example)
                mlflow.pytorch.log_model(
                    model, name=name, signature=signature, serialization_format="pickle",
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                )
            # start_run/end_run marked the run FINISHED; it is still in progress until its block ends.
            self.client.update_run(self.run_id, status="RUNNING")


@contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Silence MLflow's per-call advice (pickle format, local-build version suffix) repeated every fold."""
    saved = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


class ParentRun(Run):
    """A method's parent run; :meth:`fold_run` opens its child runs."""

    def __init__(self, client, run_id: str, experiment_id: str, clock: list[float], tracking: str) -> None:
        super().__init__(client, run_id, clock, tracking)
        self.experiment_id = experiment_id

    @contextmanager
    def fold_run(self, fold: int, repeat: int = 0, tags: Mapping[str, Any] | None = None) -> Iterator[Run]:
        """A child run tagged ``fold`` (and ``repeat``); FAILED if the block raises, which re-raises.

        A failing fold leaves the parent and the other folds running: the caller catches and goes on.
        """
        all_tags = {"mlflow.parentRunId": self.run_id, "fold": str(fold), "repeat": str(repeat), **(tags or {})}
        name = f"fold-{fold}" if repeat == 0 else f"repeat-{repeat}-fold-{fold}"
        with self._timed():
            info = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name).info
        child = Run(self.client, info.run_id, self._clock, self.tracking)
        with _terminate_on_exit(child):
            yield child


@contextmanager
def parent_run(
    stage: str,
    name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, Any],
    experiment: str,
    tracking: str = "",
    root: str | os.PathLike | None = None,
) -> Iterator[ParentRun]:
    """Open the parent run ``<stage>@<name>`` in ``experiment`` (created with artifacts beside the DB).

    Args:
        stage: e.g. ``train``; name: head or probe name; params: logged once, flattened;
        tags: provenance (see :func:`provenance_tags`), plus ``stage`` and ``method`` added here;
        experiment: experiment name (one per task); tracking: URI (empty → :func:`tracking_uri`);
        root: repo root (default: found from cwd).

    An inherited ``MLFLOW_RUN_ID`` (e.g. set by a caller's own run) is dropped so runs never attach to
    it. The run ends FINISHED, or FAILED if the block raises (which re-raises).
    """
    from mlflow import MlflowClient

    os.environ.pop("MLFLOW_RUN_ID", None)
    clock = [0.0]
    start = time.perf_counter()
    uri = tracking_uri(tracking, root)
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        # the tag opens the experiment in the UI's "model training" view (MLflow 3 otherwise may pick GenAI)
        experiment_id = client.create_experiment(
            experiment,
            artifact_location=_artifact_location(uri, root),
            tags={"mlflow.experimentKind": "custom_model_development"},
        )
    else:
        experiment_id = found.experiment_id
    all_tags = {"stage": stage, "method": name, **{k: str(v) for k, v in tags.items()}}
    info = client.create_run(experiment_id, tags=all_tags, run_name=f"{stage}@{name}").info
    clock[0] += time.perf_counter() - start
    run = ParentRun(client, info.run_id, experiment_id, clock, uri)
    run.log_params(params)
    with _terminate_on_exit(run):
        yield run


@contextmanager
def _terminate_on_exit(run: Run) -> Iterator[None]:
    try:
        yield
    except BaseException:
        run.flush()
        with run._timed():
            run.client.set_terminated(run.run_id, status="FAILED")
        raise
    run.flush()
    with run._timed():
        run.client.set_terminated(run.run_id, status="FINISHED")


def _artifact_location(uri: str, root: str | os.PathLike | None) -> str | None:
    """Absolute ``<root>/mlartifacts`` for a local SQLite store; the server decides otherwise."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    return (repo_root(root) / "mlartifacts").as_uri()
