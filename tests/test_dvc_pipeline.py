"""The whole `dvc repro` pipeline on a small real-slide cohort, and DVC's re-run behaviour.

A copy of the project (dvc.yaml, params.yaml, demo slides, code folders) is made a fresh git + DVC repo.
The cohort is 8 labelled demo slides (2 folds), the encoder is the tiny test encoder, two heads and one
probe, so the pipeline runs in about a minute; the stage commands are the real `slidemil` CLI.
"""

from __future__ import annotations

import json
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

COPIED = ("dvc.yaml", "demo", "slidemil", "pipeline", "extract", "splits", "mil_models", "prompts")
EXPERIMENT = "label: dense vs sparse"  # named by what the task predicts
#: the README's commands to compare methods and experiments, and the terminal they must fit
METRICS_SHOW = ["metrics", "show"]  # + metrics/*@*.json: one line per method
EXP_SHOW = ["exp", "show", "--only-changed", "--drop", "Created|metrics|predictions"]
TERMINAL_COLUMNS = 160


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
    params["train"].update(heads=["abmil", "mean_mlp"], epochs=3, n_heatmaps=0, n_bootstrap=50)
    params["probe"].update(probes=["linear"], n_bootstrap=50)
    params["report"]["n_bootstrap"] = 50
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # as in the repo: metrics, plots and reports are tracked in git, so `dvc exp show` compares them
    (root / ".gitignore").write_text("/data/\n/models/\n/predictions/\n/deploy/\n/mlflow.db\n/mlartifacts/\n")
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


def test_mlflow_store_after_the_pipeline(project):
    """Every fold run is tagged and has params, models are named per method and fold with metrics linked,
    parent runs hold only their own method's params, and no empty "Default" experiment is left."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    root, env = project
    _run([sys.executable, "-m", "dvc", "repro"], root, env)
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    assert [e.name for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)] == [EXPERIMENT]
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert "mlflow.sharedViewState.slidemil" in experiment.tags and "| AUROC" in experiment.tags["mlflow.note.content"]
    runs = client.search_runs([experiment.experiment_id])
    parents = {r.info.run_id: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 * 3  # 2 folds of abmil, mean_mlp, linear
    for child in children:
        parent = parents[child.data.tags["mlflow.parentRunId"]]
        assert child.data.tags["method"] == parent.data.tags["method"] and child.data.tags["stage"] in ("train", "probe")
        assert child.info.run_name == f"{child.data.tags['method']} fold-{child.data.tags['fold']}"
        assert child.data.params and child.data.params.items() >= parent.data.params.items()
        assert {i.dataset.name for i in child.inputs.dataset_inputs} == {"tiny_test.zarr", "splits.json"}
    train = [r for r in parents.values() if r.data.tags["stage"] == "train"]
    assert len({r.info.run_name for r in train}) == 2 and all("train.heads" not in r.data.params for r in train)
    assert all(r.data.metrics["test/auroc_mean"] == json.loads(
        (root / f"metrics/train@{r.data.tags['method']}.json").read_text())["auroc"] for r in train)
    models = client.search_logged_models([experiment.experiment_id])
    assert sorted(m.name for m in models) == ["abmil-fold-0", "abmil-fold-1", "mean_mlp-fold-0", "mean_mlp-fold-1"]
    for model in models:
        linked = {m.key for m in model.metrics or []}
        assert {"test/auroc", "test/balanced_accuracy", "val/auroc"} <= linked, model.name
        assert model.params["head"] == model.name.split("-fold-")[0]


def test_metrics_files_are_small_and_read_at_a_glance(project):
    root, env = project
    _run([sys.executable, "-m", "dvc", "repro"], root, env)
    files = sorted((root / "metrics").glob("*.json"))
    assert len(files) >= 3
    for path in files:
        assert len(_numbers(json.loads(path.read_text()))) <= 20, path.name
    methods = sorted(str(p.relative_to(root)) for p in root.glob("metrics/*@*.json"))
    shown = _run([sys.executable, "-m", "dvc", *METRICS_SHOW, *methods], root, {**env, "COLUMNS": "400"})
    lines = [line.rstrip() for line in shown.splitlines() if line.strip()]
    assert lines[0].split() == ["Path", "auroc", "auroc_high", "auroc_low", "balanced_accuracy",
                                "balanced_accuracy_high", "balanced_accuracy_low", "n_usable_folds"]
    assert len(lines) == 1 + len(methods) == 4
    # the longest method name of the demo (train@abmil_gated) widens the path column by 5
    assert max(map(len, lines)) + 5 <= TERMINAL_COLUMNS, shown


def _numbers(document) -> list[float]:
    if isinstance(document, dict):
        return [n for value in document.values() for n in _numbers(value)]
    if isinstance(document, list):
        return [n for value in document for n in _numbers(value)]
    return [document] if isinstance(document, (int, float)) and not isinstance(document, bool) else []


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
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id

    def parent_runs():  # fold runs are tagged stage=train too
        runs = client.search_runs([experiment], filter_string="tags.stage = 'train'")
        return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]

    before = len(parent_runs())
    _run([sys.executable, "-m", "dvc", "exp", "run", "-S", "train.epochs=1"], root, env)
    runs = parent_runs()
    assert len(runs) == before + 2  # one new parent run per head
    new = runs[:2]  # newest first
    assert {r.data.params.get("train.epochs") for r in new} == {"1"}
    assert all(r.data.tags.get("dvc.exp_name") for r in new)  # linked to the DVC experiment
    before_names = {r.info.run_name for r in runs[2:]}
    assert not {r.info.run_name for r in new} & before_names  # the 1-epoch runs are told apart by name
    assert all("epochs=1" in r.info.run_name for r in new)
    # the README's comparison: changed params and each method's test AUROC, in a terminal
    shown = _run([sys.executable, "-m", "dvc", *EXP_SHOW], root, {**env, "COLUMNS": str(TERMINAL_COLUMNS)})
    header = next(line for line in shown.splitlines() if "Experiment" in line).split()
    baseline = json.loads(_run(["git", "show", "HEAD:reports/metrics.json"], root, env))["auroc"]
    changed = {m for m, auroc in json.loads((root / "reports/metrics.json").read_text())["auroc"].items()
               if auroc != baseline[m]}  # the workspace holds the experiment's results
    assert "train.epochs" in header and {c for c in header if c.startswith("auroc.")} == {f"auroc.{m}" for m in changed}
    assert "…" not in shown, shown  # nothing cut to fit
    assert max(len(line.rstrip()) for line in shown.splitlines()) <= TERMINAL_COLUMNS, shown
