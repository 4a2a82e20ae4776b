"""The whole `dvc repro` pipeline on a small real-slide cohort, and DVC's re-run behaviour.

A copy of the project (dvc.yaml, params.yaml, demo slides, code folders) is made a fresh git + DVC repo.
The cohort is 8 labelled demo slides (2 folds), the encoder is the tiny test encoder, two heads and one
probe, so the pipeline runs in about a minute; the stage commands are the real `slidemil` CLI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]

COPIED = ("dvc.yaml", "demo", "pipeline", "extract", "splits", "mil_models", "prompts")


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def _stages_run(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("dvcproject")
    for name in COPIED:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, root / name)
    cohort = pd.read_csv(root / "demo/cohort.csv", dtype=str, keep_default_na=False)
    labelled = cohort[cohort["label"] != ""]
    patients = labelled.groupby("label")["patient_id"].unique()
    keep = {p for label in patients.index for p in sorted(patients[label])[:4]}
    subset = pd.concat([labelled[labelled["patient_id"].isin(keep)], cohort[cohort["slide_id"] == "real-dicom-camelyon"]])
    subset.to_csv(root / "demo/small.csv", index=False)
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["cohort"] = "demo/small.csv"
    params["extract"]["encoder"] = "tiny_test"
    params["split"]["n_folds"] = 2
    params["train"].update(heads=["abmil", "mean_mlp"], epochs=3, log_model=False, n_heatmaps=0, n_bootstrap=50)
    params["probe"].update(probes=["linear"], n_bootstrap=50)
    params["report"]["n_bootstrap"] = 50
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / ".gitignore").write_text("/data/\n/models/\n/metrics/\n/predictions/\n/plots/\n/reports/\n/deploy/\n/mlflow.db\n/mlartifacts/\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "test"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "test@example.org"
    _run(["git", "init", "-q"], root, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], root, env)
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-qm", "project"], root, env)
    return root, env


def test_repro_runs_every_stage_then_nothing(project):
    root, env = project
    first = _run([sys.executable, "-m", "dvc", "repro"], root, env)
    assert {"tile", "extract", "split", "train@abmil", "train@mean_mlp", "probe@linear", "zeroshot", "report",
            "deploy"} <= _stages_run(first)
    assert (root / "deploy/last.json").is_file()  # deploy.cohort is empty: a no-op
    manifest = pd.read_csv(root / "data/tiles/manifest.csv", dtype=str, keep_default_na=False)
    assert manifest.set_index("slide_id").loc["real-dicom-camelyon", "status"] == "failed"
    assert (manifest["status"] == "ok").sum() == len(manifest) - 1
    summary = (root / "reports/summary.md").read_text()
    assert "train@abmil" in summary and "probe@linear" in summary and "meaningless" in summary
    second = _run([sys.executable, "-m", "dvc", "repro"], root, env)
    assert _stages_run(second) == set()


def test_training_param_reruns_only_training_and_what_follows(project):
    root, env = project
    _run([sys.executable, "-m", "dvc", "repro"], root, env)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["epochs"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run([sys.executable, "-m", "dvc", "repro"], root, env)
    assert _stages_run(out) == {"train@abmil", "train@mean_mlp", "report", "deploy"}


def test_tiling_param_reruns_tile_and_everything_after(project):
    root, env = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["tile"]["min_tissue_fraction"] = 0.3
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run([sys.executable, "-m", "dvc", "repro"], root, env)
    assert {"tile", "extract"} <= _stages_run(out)


def test_dvc_exp_run_lands_in_the_same_mlflow_store(project):
    from mlflow import MlflowClient

    root, env = project
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-qm", "baseline", "--allow-empty"], root, env)
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("label").experiment_id
    before = len(client.search_runs([experiment], filter_string="tags.stage = 'train'"))
    _run([sys.executable, "-m", "dvc", "exp", "run", "-S", "train.epochs=1"], root, env)
    runs = client.search_runs([experiment], filter_string="tags.stage = 'train'")
    assert len(runs) == before + 2  # one new parent run per head
    new = runs[:2]  # newest first
    assert {r.data.params.get("train.epochs") for r in new} == {"1"}
    assert all(r.data.tags.get("dvc.exp_name") for r in new)  # linked to the DVC experiment
