"""A small real project for the deploy and heatmap tests: 6 demo slides tiled, encoded with ``tiny_test``, split
into 3 folds and two heads trained for 2 epochs (a few seconds on CPU)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd

from slidemil.core.params import load_params

DEMO = Path(__file__).resolve().parents[2] / "demo"
TRAINING = ["cmu1-P01-a", "cmu1-P02-a", "cmu1-P03-a", "cmu1-P04-a", "cmu1-P07-a", "cmu1-P08-a"]


def write_cohort(path: Path, slide_ids: list[str], extra: list[dict] = ()) -> Path:
    """A cohort CSV of demo slides (absolute paths) plus ``extra`` rows."""
    cohort = pd.read_csv(DEMO / "cohort.csv", dtype=str, keep_default_na=False).set_index("slide_id")
    rows = [{"slide_id": s, "path": str(DEMO / cohort.at[s, "path"]), "patient_id": cohort.at[s, "patient_id"],
             "label": cohort.at[s, "label"]} for s in slide_ids]
    pd.DataFrame([*rows, *extra], columns=["slide_id", "path", "patient_id", "label"]).to_csv(path, index=False)
    return path


def build(root: Path, blank_db: Path, heads=("abmil", "clam_sb")) -> None:
    """Write params.yaml and run tile → extract → split → train in ``root`` (the current folder)."""
    from slidemil.pipeline.stages import extract, split, tile, train

    shutil.copy(blank_db, root / "mlflow.db")
    write_cohort(root / "cohort.csv", TRAINING)
    (root / "params.yaml").write_text(
        "cohort: cohort.csv\n"
        "task: {label: label, classes: [dense, sparse]}\n"
        "extract: {encoder: tiny_test, device: cpu, batch_size: 16, num_workers: 1}\n"
        "split: {n_folds: 3, val_fraction: 0.25}\n"
        f"train: {{heads: {list(heads)}, epochs: 2, patience: 0, n_bootstrap: 50, n_heatmaps: 1, log_model: false,"
        " device: cpu, batch_size: 2}\n"
        f"mlflow: {{tracking_uri: 'sqlite:///{root}/mlflow.db'}}\n"
        "deploy: {n_bootstrap: 50, device: cpu}\n"
        "heatmap: {thumbnail_size: 512, top_k: 3}\n"
    )
    params = load_params(root / "params.yaml")
    assert tile.run(params, argparse.Namespace(force=False)) == 0
    assert extract.run(params, argparse.Namespace(force=False, list_encoders=False)) == 0
    assert split.run(params, argparse.Namespace()) == 0
    assert train.run(params, argparse.Namespace(head=None)) == 0
