"""Several processes opening a new SQLite MLflow store and the same experiment at once (dvc exp --queue -j)."""

import subprocess
import sys

import pytest
from mlflow import MlflowClient

_ONE_RUN = """
import sys
from slidemil.pipeline.tracking import parent_run
with parent_run("train", sys.argv[1], {"head": sys.argv[1]}, {}, experiment="label", root=sys.argv[2]) as run:
    run.log_metrics({"test/auroc_mean": 0.5})
"""


@pytest.mark.slow
def test_parallel_processes_share_a_new_store(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text("task: {label: label}\n")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    heads = ["abmil", "clam_sb", "transmil"]
    procs = [
        subprocess.Popen([sys.executable, "-c", _ONE_RUN, head, str(tmp_path)], stderr=subprocess.PIPE, text=True)
        for head in heads
    ]
    failures = [proc.communicate(timeout=600)[1][-2000:] for proc in procs if proc.wait(timeout=600) != 0]
    assert failures == []
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.resolve()}/mlflow.db")
    experiments = [e for e in client.search_experiments() if e.name == "label"]
    assert len(experiments) == 1
    runs = client.search_runs([experiments[0].experiment_id])
    assert sorted(r.data.tags["method"] for r in runs) == sorted(heads)
