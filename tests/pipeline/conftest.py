"""Fixtures shared by the pipeline tests: an empty MLflow store, one torch thread, a tiny project builder."""

import argparse
import importlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient


@pytest.fixture(scope="session")
def blank_db(tmp_path_factory):
    """An empty MLflow SQLite store, migrated once per session (migrations take seconds); tests copy it."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def one_torch_thread():
    """Tiny models on a shared 2-core machine: several torch threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ProjectHelpers:
    """Builds a tiny project (params.yaml, feature store, splits, MLflow store) and runs stages in it."""

    def __init__(self, blank_db: Path) -> None:
        self.blank_db = blank_db

    def write_project(self, root, encoder_id="conch_v1", weights="synthetic:1", n_slides=18, dim=8, seed=0,
                      nan_slide=None):
        """params.yaml, a feature store (planted per-class means, 1–4 patches per slide), a 3-fold splits file
        (6 test, 4 validation, 8 training slides per fold) and an empty MLflow store under ``root``.

        ``nan_slide``: this slide's features are NaN and it is only used as a test slide (of its fold).

        Returns ``(slide_ids, labels)``: ``s00``…, alternating ``benign``/``tumor``.
        """
        from slidemil.extract.store import FeatureStoreWriter
        from slidemil.splits.io import build_splits, write_splits

        rng = np.random.default_rng(seed)
        classes = ("benign", "tumor")
        slide_ids = [f"s{i:02d}" for i in range(n_slides)]
        labels = {sid: classes[i % 2] for i, sid in enumerate(slide_ids)}
        writer = FeatureStoreWriter(root / "data/features/conch_v1.zarr", encoder_id, weights, dim)
        centre = {"benign": -np.ones(dim), "tumor": np.ones(dim)}
        for i, sid in enumerate(slide_ids):
            n = 1 + i % 4
            feats = (centre[labels[sid]] + rng.normal(0, 1.0, (n, dim))).astype(np.float32)
            if sid == nan_slide:
                feats[:] = np.nan
            with writer.lock(sid) as lock:
                writer.write_slide(sid, feats, np.zeros((n, 2), np.int64), {"slide_id": sid}, lock)
        folds = []
        for k in range(3):
            test = slide_ids[k * 6:(k + 1) * 6]
            rest = [s for s in slide_ids if s not in test and s != nan_slide]
            folds.append({"fold": k, "repeat": 0, "train": rest[4:], "val": rest[:4], "test": test})
        slides = pd.DataFrame({"slide_id": slide_ids, "patient_id": [f"p{s}" for s in slide_ids],
                               "label": [labels[s] for s in slide_ids]})
        write_splits(root / "data/splits.json", build_splits("label", classes, (0,), "kfold", folds, {}, slides))
        shutil.copyfile(self.blank_db, root / "mlflow.db")
        (root / "params.yaml").write_text(
            "cohort: cohort.csv\ntask: {label: label, classes: [benign, tumor]}\n"
            f"mlflow: {{tracking_uri: 'sqlite:///{root}/mlflow.db'}}\n"
            "probe: {n_bootstrap: 50, probe_kwargs: {linear: {c_grid: [0.01, 1.0]}, knn: {n_neighbors: 3}}}\n"
            "zeroshot: {n_bootstrap: 50, topk: [1, 2]}\n"
            "report: {n_bootstrap: 200}\n"
        )
        return slide_ids, labels

    def write_mlflow_store(self, root) -> None:
        """An empty MLflow store at ``root/mlflow.db``."""
        shutil.copyfile(self.blank_db, root / "mlflow.db")

    @staticmethod
    def run_stage(name, overrides=(), **options):
        """Run stage ``name`` as ``slidemil <name>`` would in the current folder (parser-free)."""
        from slidemil.core.params import load_params

        module = importlib.import_module(f"slidemil.pipeline.stages.{name}")
        return module.run(load_params("params.yaml", list(overrides)), argparse.Namespace(**options))


@pytest.fixture(scope="session")
def helpers(blank_db):
    """:class:`ProjectHelpers`: one project builder for the probe, zero-shot, report and fold-loop tests."""
    return ProjectHelpers(blank_db)
