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
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import Field

from slidemil.core.params import Section
from slidemil.core.provenance import file_digest  # noqa: F401 - re-exported for the stages
from slidemil.core.provenance import value_digest as json_digest

log = logging.getLogger(__name__)


class MlflowSection(Section):
    """The ``mlflow:`` params section."""

    experiment: str = Field("", description="experiment name; empty: what the task predicts, e.g. "
                            "'label: dense vs sparse' (experiment_name)")
    tracking_uri: str = Field("", description="tracking store; empty: env MLFLOW_TRACKING_URI, else "
                              "sqlite:///<repo root>/mlflow.db")
    max_model_mb: float = Field(200, gt=0, description="larger models are not logged to MLflow (the weights "
                                "stay under models/)")


#: Never copied into MLflow: feature stores are large and live under data/ (DVC tracks them).
_FEATURE_STORE_SUFFIXES = (".zarr", ".h5", ".hdf5")

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


def experiment_name(configured: str, label: str, classes: list[str] | tuple[str, ...] = (),
                    task_type: str = "classification", time: str = "", event: str = "") -> str:
    """The task's MLflow experiment: ``configured`` (``mlflow.experiment``) if set, else what it predicts:
    classification ``label: dense vs sparse`` (the label column and its classes in index order; the column
    alone without classes), survival ``survival: os_months, os_status`` (time and event columns), regression
    ``<label> (regression)``."""
    if configured:
        return configured
    if task_type == "survival":
        return f"survival: {time}, {event}"
    if task_type == "regression":
        return f"{label} (regression)"
    return f"{label}: {' vs '.join(map(str, classes))}" if classes else str(label)


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

    def __init__(self, client, run_id: str, clock: list[float], tracking: str = "",
                 max_model_mb: float = 200) -> None:
        self.client = client
        self.run_id = run_id
        self.tracking = tracking  # the store's URI (for mlflow.pytorch.log_model)
        self.max_model_mb = max_model_mb
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

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, model_id: str | None = None) -> None:
        """Buffer ``metrics`` (sent by :meth:`flush`, automatically when 1,000 are waiting and at run end).

        NaN values are kept (MLflow stores them); non-numeric values are skipped. ``model_id`` links them to
        a logged model (:meth:`log_model`), so the Models tab shows them beside it.
        """
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._buffer.append(Metric(key=key, value=float(value), timestamp=stamp, step=step or 0,
                                           model_id=model_id))
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
        """Copy a local file into the run's artifacts (under ``artifact_path``); a folder or a feature store
        (``.zarr``, ``.h5``) is refused with a warning: MLflow would copy gigabytes."""
        path = Path(path)
        if path.is_dir() or path.suffix.lower() in _FEATURE_STORE_SUFFIXES:
            logging.getLogger(__name__).warning("not logging %s to MLflow: folders and feature stores stay on disk",
                                                path)
            return
        with self._timed():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store ``text`` as ``artifact_file``."""
        with self._timed():
            self.client.log_text(self.run_id, text, artifact_file)

    def log_table(self, table, artifact_file: str) -> None:
        """Store a DataFrame as an MLflow table artifact (``*.json``), viewable and comparable in the UI."""
        with self._timed():
            self.client.log_table(self.run_id, table, artifact_file)

    def log_datasets(self, datasets: Mapping[str, tuple[str, str]]) -> None:
        """Record the run's inputs (``mlflow.log_input``): ``{context: (path, digest)}``, e.g.
        ``{"features": ("data/features/conch_v1.zarr", "<sha256>"), "splits": ("data/splits.json", …)}``.

        Each becomes a dataset named after its file, with the first 12 hex digits of its digest, under the
        context (``features``, ``splits``) in the run's Datasets column; an empty path is skipped.
        """
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource
        from mlflow.entities import DatasetInput, InputTag

        inputs = []
        for context, (path, digest) in datasets.items():
            if not path:
                continue
            source = LocalArtifactDatasetSource(Path(path).resolve().as_uri())
            dataset = MetaDataset(source, name=Path(path).name, digest=(digest or "unknown")[:12])
            inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)]))
        with self._timed():
            self.client.log_inputs(self.run_id, datasets=inputs)

    def log_model(self, model, in_dim: int, n_outputs: int, tracking: str, name: str = "model",
                  step: int = 0, params: Mapping[str, Any] | None = None) -> str | None:
        """Log a torch model with ``mlflow.pytorch.log_model`` as the LoggedModel ``name``; returns its model ID.

        ``model`` maps float32 ``[B, N, D]`` to ``[B, C]``; its signature accepts any bag size (input spec
        ``(-1, -1, in_dim)``, output ``(-1, n_outputs)``). Buffered metrics are sent first, so MLflow links
        the run's metrics of ``step`` (e.g. the best epoch's ``train/*``, ``val/*``) to the model; pass the
        returned ID to :meth:`log_metrics` to link later ones (its test metrics). ``params`` (flattened)
        are stored on the model. Pip requirements are given, not inferred, to keep the call cheap.
        A model above ``max_model_mb`` (parameters + buffers) is not logged (returns None): a warning says
        so, and the weights stay where the caller saved them (``models/``).
        """
        size_mb = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())) / 2**20
        if size_mb > self.max_model_mb:
            logging.getLogger(__name__).warning(
                "model of %.0f MB not logged to MLflow (mlflow.max_model_mb=%s); its weights stay under models/",
                size_mb, self.max_model_mb)
            return None
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
        self.flush()
        with self._timed(), _quiet("mlflow.pytorch", "mlflow.utils.requirements_utils"):
            mlflow.set_tracking_uri(tracking)
            with mlflow.start_run(run_id=self.run_id):
                # pickle: the model is our own nn.Module (MLflow 3's pt2 format needs an input example)
                info = mlflow.pytorch.log_model(
                    model, name=name, signature=signature, serialization_format="pickle", step=step,
                    params=flatten(params or {}), pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                )
            # start_run/end_run marked the run FINISHED; it is still in progress until its block ends.
            self.client.update_run(self.run_id, status="RUNNING")
        return info.model_id


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

    def __init__(self, client, run_id: str, experiment_id: str, clock: list[float], tracking: str,
                 stage: str = "", method: str = "", max_model_mb: float = 200) -> None:
        super().__init__(client, run_id, clock, tracking, max_model_mb)
        self.experiment_id = experiment_id
        self.stage, self.method = stage, method

    @contextmanager
    def fold_run(self, fold: int, repeat: int = 0, tags: Mapping[str, Any] | None = None,
                 params: Mapping[str, Any] | None = None) -> Iterator[Run]:
        """A child run ``<method> fold-<k>`` tagged ``stage``, ``method``, ``fold`` and ``repeat`` (plus ``tags``)
        with ``params`` logged; FAILED if the block raises, which re-raises.

        A failing fold leaves the parent and the other folds running: the caller catches and goes on.
        """
        all_tags = {"mlflow.parentRunId": self.run_id, "stage": self.stage, "method": self.method,
                    "fold": str(fold), "repeat": str(repeat), **(tags or {})}
        with self._timed():
            info = self.client.create_run(self.experiment_id, tags=all_tags,
                                          run_name=f"{self.method} {fold_name(fold, repeat)}").info
        child = Run(self.client, info.run_id, self._clock, self.tracking, self.max_model_mb)
        with _terminate_on_exit(child):
            if params:
                child.log_params(params)
            yield child

    def set_experiment_tags(self, tags: Mapping[str, str]) -> None:
        """Set tags on the run's experiment (e.g. ``mlflow.note.content``, its description in the UI)."""
        with self._timed():
            for key, value in tags.items():
                self.client.set_experiment_tag(self.experiment_id, key, value)


def fold_name(fold: int, repeat: int = 0) -> str:
    """``fold-<k>``, or ``repeat-<r>-fold-<k>`` for repeats after the first: child runs, models, figures."""
    return f"fold-{fold}" if repeat == 0 else f"repeat-{repeat}-fold-{fold}"


#: key of the experiment's shared runs view (``?viewStateShareKey=`` in the UI's URL; :func:`runs_view`)
VIEW_KEY = "slidemil"


def runs_view(metrics: list[str]) -> dict[str, str]:
    """Experiment tag of a saved runs-table view that shows ``metrics`` as columns, in this order.

    MLflow's UI shows no metric column by default and keeps the chosen columns per browser; a shared view
    (the UI's "Share" button stores one as tag ``mlflow.sharedViewState.<key>``) opens with them for
    everyone: ``<ui>/#/experiments/<id>/runs?viewStateShareKey=slidemil``. The run-name column is widened
    so the configuration in a parent run's name is readable; the runs keep the default order (newest
    first) because MLflow stops nesting fold runs under their parent when sorted by a metric.
    """
    columns = [f"metrics.`{m}`" for m in metrics]
    state = {"selectedColumns": columns, "columnOrder": ["attributes.`Run Name`", *columns],
             "columnWidths": {"attributes.`Run Name`": 360, **dict.fromkeys(columns, 150)}}
    return {f"mlflow.sharedViewState.{VIEW_KEY}": json.dumps(state)}


@contextmanager
def parent_run(
    stage: str,
    name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, Any],
    experiment: str,
    tracking: str = "",
    root: str | os.PathLike | None = None,
    run_name: str = "",
    max_model_mb: float = 200,
) -> Iterator[ParentRun]:
    """Open the parent run of ``<stage>@<name>`` in ``experiment`` (created with artifacts beside the DB).

    Args:
        stage: e.g. ``train``; name: head or probe name; params: logged once, flattened;
        tags: provenance (see :func:`provenance_tags`), plus ``stage`` and ``method`` added here;
        experiment: experiment name (one per task); tracking: URI (empty → :func:`tracking_uri`);
        root: repo root (default: found from cwd); run_name: shown in the UI (default ``<stage>@<name>``;
        :func:`run_label` names a configuration); max_model_mb: larger models are not logged (children too).

    MLflow creates an empty experiment "Default" with a new store; it is deleted when it holds no run
    (:func:`_drop_empty_default`), so the UI lists only the task's experiment.

    An inherited ``MLFLOW_RUN_ID`` (e.g. set by a caller's own run) is dropped so runs never attach to
    it. The run ends FINISHED, or FAILED if the block raises (which re-raises).
    """
    os.environ.pop("MLFLOW_RUN_ID", None)
    clock = [0.0]
    start = time.perf_counter()
    uri = tracking_uri(tracking, root)
    client, experiment_id = open_experiment(uri, experiment, root)
    all_tags = {"stage": stage, "method": name, **{k: str(v) for k, v in tags.items()}}
    info = client.create_run(experiment_id, tags=all_tags, run_name=run_name or f"{stage}@{name}").info
    clock[0] += time.perf_counter() - start
    run = ParentRun(client, info.run_id, experiment_id, clock, uri, stage, name, max_model_mb)
    run.log_params(params)
    with _terminate_on_exit(run):
        yield run


def run_label(method: str, params: Mapping[str, Any], shown: Mapping[str, str] = MappingProxyType({})) -> str:
    """A parent run's name: the method, the values of ``shown`` params, and a 6-digit digest of all ``params``.

    Args:
        method: e.g. ``abmil``; params: the run's params (nested); shown: ``{flattened key: label}`` of
        params worth reading in the name, e.g. ``{"train.lr": "lr", "train.epochs": "ep"}``.

    Returns:
        e.g. ``abmil · lr=0.0002 · ep=20 · 3f9a2c``: two configurations differing in any param differ in
        the digest, runs of one configuration share the name.
    """
    flat = flatten(params)
    parts = [method, *(f"{label}={flat[key]}" for key, label in shown.items() if key in flat)]
    return " · ".join([*parts, json_digest(flat)[:6]])


def _drop_empty_default(client) -> None:
    """Delete the "Default" experiment (ID 0) MLflow puts in every new store, while it holds no run.

    A deleted experiment stays in the store (restorable in the UI, or by ``mlflow experiments restore``)
    and keeps MLflow from creating another; a Default with runs is left alone. Another process deleting it
    first is fine.
    """
    from mlflow.exceptions import MlflowException

    try:
        default = client.get_experiment("0")
        if default.lifecycle_stage == "active" and not client.search_runs(["0"], max_results=1, run_view_type=3):
            client.delete_experiment("0")
    except MlflowException as exc:  # no experiment 0 (a server store), or already deleted
        log.debug("left the Default experiment as it is: %s", exc)
def open_experiment(uri: str, experiment: str, root: str | os.PathLike | None = None) -> tuple[Any, str]:
    """A client on the store at ``uri`` and the ID of ``experiment``, both created once across processes.

    Parallel ``slidemil train --head X`` on a new SQLite store race twice: on creating the store's tables
    (``table … already exists``, alembic errors) and on the experiment's unique name. A file lock beside
    the store serialises both for local stores; for a server, a lost race on the name is answered by
    looking the experiment up again. The empty "Default" of a new store is dropped
    (:func:`_drop_empty_default`). Raises ``mlflow.MlflowException`` for any other store error.
    """
    from filelock import FileLock
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    lock_path = _store_lock_path(uri, root)
    with FileLock(lock_path, timeout=600) if lock_path else nullcontext():
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)  # opening the store creates its schema
        if found is None:
            try:
                # the tag opens the experiment in the UI's "model training" view (MLflow 3 may otherwise pick GenAI)
                experiment_id = client.create_experiment(
                    experiment,
                    artifact_location=_artifact_location(uri, root),
                    tags={"mlflow.experimentKind": "custom_model_development"},
                )
            except MlflowException:
                found = client.get_experiment_by_name(experiment)  # another process created it meanwhile
                if found is None:
                    raise
                experiment_id = found.experiment_id
        else:
            experiment_id = found.experiment_id
        _drop_empty_default(client)
    return client, experiment_id


def _store_lock_path(uri: str, root: str | os.PathLike | None) -> Path | None:
    """``<store>.lock`` beside a local SQLite file or file store; None for a server (it serialises itself)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)
        return db.with_name(db.name + ".lock")
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    return repo_root(root) / "mlflow.lock"


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
