"""Registry sweep: every registered task kind runs through the one fold loop and writes the shared files."""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from slidemil.core.errors import UnknownPluginError
from slidemil.pipeline.crossval import FoldResult, Tracking, cross_validate
from slidemil.pipeline.data import MethodData
from slidemil.pipeline.evaluation import output_paths
from slidemil.pipeline.kinds import kind_for  # noqa: F401  (registers survival and regression)
from slidemil.pipeline.task_kinds import TASK_KINDS, Bootstrap, create_task_kind
from slidemil.splits.task import Task

N_SLIDES, CLASSES = 12, ["benign", "tumor"]


def _classification(ids, seed):
    """Informative class probabilities [n, 2] of alternating labels."""
    rng = np.random.default_rng(seed)
    y = np.array([i % 2 for i in range(len(ids))])
    p1 = np.clip(0.5 + 0.3 * (2 * y - 1) + rng.normal(0, 0.15, len(ids)), 0.01, 0.99)
    return y, np.stack([1 - p1, p1], 1)


def _index(ids):
    return np.array([int(s[1:]) for s in ids])


def _survival(ids, seed):
    """(time, event) [n, 2] with every third slide censored; outputs [n, 2]: a noisy risk falling with time, and
    the risk-group cut (median risk)."""
    rng = np.random.default_rng(seed)
    time = 1.0 + _index(ids)
    y = np.column_stack([time, (_index(ids) % 3 != 0).astype(float)])
    risk = -time + rng.normal(0, 2, len(ids))
    return y, np.column_stack([risk, np.full(len(ids), np.median(risk))])


def _regression(ids, seed):
    """Targets [n] and noisy predictions [n]."""
    y = 0.5 * _index(ids)
    return y, y + np.random.default_rng(seed).normal(0, 1, len(ids))


#: task kind → (example targets and outputs of the given slides); a new kind adds its case here
EXAMPLES = {"classification": _classification, "survival": _survival, "regression": _regression}


def test_every_registered_task_kind_has_an_example():
    assert set(TASK_KINDS.names()) == set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_task_kind_through_the_fold_loop(name, tmp_path, monkeypatch, blank_db):
    monkeypatch.chdir(tmp_path)
    shutil.copy(blank_db, tmp_path / "mlflow.db")
    ids = [f"s{i:02d}" for i in range(N_SLIDES)]
    folds = [{"fold": k, "repeat": 0, "train": [], "val": [], "test": ids[4 * k:4 * k + 4]} for k in range(3)]
    targets = dict(zip(ids, EXAMPLES[name](ids, seed=0)[0].tolist(), strict=True))
    data = MethodData(splits={"folds": folds, "label": "label"}, store=None, classes=CLASSES,
                      labels={s: i % 2 for i, s in enumerate(ids)}, patients={s: f"p{s}" for s in ids}, tags={},
                      targets=targets)
    kind = create_task_kind(Task("label", tuple(CLASSES), False, type=name), data)
    assert kind.name == name

    def fold_fn(fold, child):
        if fold["fold"] == 2:
            raise ValueError("made to fail")
        y, outputs = EXAMPLES[name](fold["test"], seed=fold["fold"])
        return FoldResult(fold["test"], y, outputs)

    summary = cross_validate("probe", name, data, fold_fn, kind=kind,
                             tracking=Tracking("label", f"sqlite:///{tmp_path}/mlflow.db", {}),
                             bootstrap=Bootstrap(20, 0))
    assert summary["test/n_usable_folds"] == 2 and summary["n_failed_folds"] == 1
    paths = output_paths("probe", name)
    assert paths["metrics"].is_file() and paths["predictions"].is_file()
    plots = {p.name for p in (tmp_path / "plots" / f"probe@{name}").glob("*.csv")}
    assert plots == {"classification": {"roc.csv", "confusion.csv"}, "survival": {"km.csv"},
                     "regression": {"scatter.csv"}}[name]
    for plot in plots:  # plot data in git at 6 decimals: float32 last-bit noise between runs is no change
        table = pd.read_csv(tmp_path / "plots" / f"probe@{name}" / plot).select_dtypes("number")
        assert np.array_equal(table.to_numpy(), table.round(6).to_numpy(), equal_nan=True), plot
    written = json.loads(paths["details"].read_text())
    assert [f["status"] for f in written["folds"]] == ["ok", "ok", "failed"]
    # the DVC metrics: only the kind's headline metrics, mean and pooled 95% CI, e.g. c_index, c_index_low, …
    headline = json.loads(paths["metrics"].read_text())
    assert list(headline) == [f"{m}{s}" for m in kind.headline_metrics for s in ("", "_low", "_high")] + \
        ["n_usable_folds"] and len(headline) <= 20
    first = kind.headline_metrics[0]
    assert headline[first] == pytest.approx(written[f"test/{first}_mean"]) and headline["n_usable_folds"] == 2
    assert headline[f"{first}_low"] == pytest.approx(written[f"test/{first}_ci_low"])
    assert headline[f"{first}_low"] <= headline[f"{first}_high"]
    assert all(key.startswith("test/") for key in kind.fold_metrics(*EXAMPLES[name](ids, seed=0)))
    predictions = pd.read_csv(paths["predictions"], dtype={"slide_id": str})
    assert {"slide_id", "patient_id", "fold", "repeat"} <= set(predictions.columns)
    assert sorted(predictions["slide_id"]) == ids[:8]
    y, outputs = kind.pooled(predictions)
    assert len(y) == len(outputs) == 8
    figures = kind.figures(y, outputs, name, "out-of-fold")
    assert figures and all(isinstance(f, Figure) and p.endswith(".png") for p, f in figures.items())
    assert isinstance(kind.headline(summary), str)


def test_unknown_task_kind_is_named():
    with pytest.raises(UnknownPluginError, match="unknown task kind 'survivl'"):
        create_task_kind(SimpleNamespace(type="survivl", ordered=False), SimpleNamespace(classes=CLASSES))
