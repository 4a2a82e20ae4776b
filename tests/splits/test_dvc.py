"""``dvc repro split`` re-runs only when the cohort or the task/split params change (tmp git + DVC repo)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
# The split stage through the real CLI entry point, limited to that stage so this test does not depend on
# the other stage modules importing (same as `slidemil split` / `python -m pipeline.cli split`).
SPLIT_CMD = (f"{sys.executable} -c \"import sys, pipeline.cli as c; "
             "c.STAGES = {'split': 'slidemil.pipeline.stages.split'}; sys.exit(c.main(['split']))\"")


def run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.fixture
def dvc_repo(tmp_path, tcga) -> Path:
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")
    if dvc is None:
        pytest.fail("dvc is not installed in this environment (it is a project dependency)")
    pd.DataFrame(tcga({"a": 10, "b": 10})).to_csv(tmp_path / "cohort.csv", index=False)
    params = {"cohort": "cohort.csv", "task": {"label": "label", "classes": []},
              "split": {"n_folds": 3, "require_features": False}, "train": {"lr": 0.001}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    stage = {"cmd": SPLIT_CMD, "deps": ["cohort.csv"], "params": ["cohort", "task", "split"],
             "outs": ["data/splits.json", "data/splits_summary.csv"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"split": stage}}, width=1000))
    run(["git", "init", "-q"], tmp_path)
    run([dvc, "init", "-q"], tmp_path)
    return tmp_path


@pytest.mark.slow  # ~30 s: five dvc invocations and three stage runs in subprocesses
def test_dvc_repro_split_reruns_only_on_cohort_or_split_params(dvc_repo):
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or "dvc"

    def repro() -> bool:
        return "Running stage 'split'" in run([dvc, "repro", "split"], dvc_repo)

    assert repro()
    first = (dvc_repo / "data" / "splits.json").read_text()
    assert not repro()  # nothing changed

    params = yaml.safe_load((dvc_repo / "params.yaml").read_text())
    params["train"]["lr"] = 0.01  # another stage's section
    (dvc_repo / "params.yaml").write_text(yaml.safe_dump(params))
    assert not repro()

    params["split"]["seed"] = 1
    (dvc_repo / "params.yaml").write_text(yaml.safe_dump(params))
    assert repro()
    assert (dvc_repo / "data" / "splits.json").read_text() != first

    with (dvc_repo / "cohort.csv").open("a") as f:
        f.write("extra-DX1,extra.svs,extra,a,A0\n")
    assert repro()
    assert "extra-DX1" in (dvc_repo / "data" / "splits.json").read_text()
