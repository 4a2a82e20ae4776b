"""Survival and regression targets from the cohort table, and their patient-grouped stratified splits."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from slidemil.core.errors import CohortError, ParamsError
from slidemil.splits.cohort import load_cohort
from slidemil.splits.targets import assign_strata, target_cohort
from slidemil.splits.task import load_task


def _survival_task(**extra):
    return load_task({"task": {"type": "survival", "time": "OS months", "event": "vital", **extra}})


def _rows(n=40, seed=0):
    rng = np.random.default_rng(seed)
    spellings = ["dead", "alive", "1", "0", "Yes", "no", "TRUE", "false", "event", "censored"]
    rows = []
    for i in range(n):
        patient = f"P{i // 2:03d}" if i < 10 else f"P{i:03d}"  # the first 5 patients have two slides
        rows.append({"slide_id": f"s{i:03d}", "path": f"s{i}.svs", "patient_id": patient,
                     "OS months": f"{1 + (i // 2 if i < 10 else i) * 0.7:.1f}",
                     "vital": spellings[(i // 2 if i < 10 else i) % len(spellings)],
                     "score": f"{rng.normal():.3f}"})
    return rows


def _cohort(tmp_path, rows):
    pd.DataFrame(rows).to_csv(tmp_path / "cohort.csv", index=False)
    return load_cohort(tmp_path / "cohort.csv")


def test_survival_columns_are_the_users_own_and_spellings_map(tmp_path):
    labelled = target_cohort(_cohort(tmp_path, _rows()), _survival_task())
    slides = labelled.slides.set_index("slide_id")
    assert slides.loc["s010", "time"] == pytest.approx(1 + 10 * 0.7)
    # dead, alive, 1, 0, Yes, no, TRUE, false, event, censored → 1 0 1 0 1 0 1 0 1 0
    assert slides.loc[[f"s{i:03d}" for i in range(10, 20)], "event"].tolist() == [1, 0] * 5


def test_bad_cells_are_listed_with_line_and_rule(tmp_path):
    rows = _rows()
    rows[11]["OS months"] = "n/a"
    rows[12]["OS months"] = "-3"
    rows[13]["vital"] = "deceased"
    with pytest.raises(CohortError) as error:
        target_cohort(_cohort(tmp_path, rows), _survival_task())
    message = str(error.value)
    assert "line 13: 'OS months' = 'n/a' is not a number" in message
    assert "line 14: 'OS months' = '-3' is not > 0" in message
    assert "line 15: 'vital' = 'deceased' is not an event spelling" in message
    rows = _rows()
    rows[20]["score"] = "high"
    with pytest.raises(CohortError, match="line 22: 'score' = 'high' is not a number"):
        target_cohort(_cohort(tmp_path, rows), load_task({"task": {"type": "regression", "label": "score"}}))


def test_empty_cells_exclude_slides_and_are_counted(tmp_path):
    rows = _rows()
    rows[15]["vital"] = ""
    rows[16]["OS months"] = ""
    labelled = target_cohort(_cohort(tmp_path, rows), _survival_task())
    assert sorted(labelled.excluded) == ["s015", "s016"] and len(labelled.slides) == 38


def test_a_patients_slides_must_share_the_outcome(tmp_path):
    rows = _rows()
    rows[1]["OS months"] = "99"  # s000 and s001 belong to P000
    with pytest.raises(CohortError, match="P000: line 2, line 3"):
        target_cohort(_cohort(tmp_path, rows), _survival_task())


def test_survival_task_needs_time_and_event():
    with pytest.raises(ParamsError, match="task.time"):
        load_task({"task": {"type": "survival"}})
    with pytest.raises(ParamsError, match=r"'task\.type' must be 'classification', 'survival' or 'regression', "
                       r"got 'cox'"):
        load_task({"task": {"type": "cox"}})
    with pytest.raises(ParamsError, match=r"'task\.level' must be 'slide' or 'patient', got 'case'"):
        load_task({"task": {"level": "case"}})
    with pytest.raises(ParamsError, match=r"unknown params key 'task\.kind'"):
        load_task({"task": {"kind": "survival"}})  # one field names the kind: task.type


def test_strata_fall_back_from_time_quartiles_to_event_status(tmp_path):
    slides = target_cohort(_cohort(tmp_path, _rows()), _survival_task()).slides  # 35 patients
    notes = []
    for k in (3, 5, 9, 30):
        strata, classes, note = assign_strata(slides, "survival", k)
        per_stratum = strata.groupby("label")["patient_id"].nunique()
        assert set(per_stratum.index) == set(classes)
        assert per_stratum.min() >= k or classes == ("censored", "event")
        notes.append(note)
    assert notes[0] == "stratified on event status × 4 follow-up time quantiles"
    assert notes[-1] == "stratified on event status"
    assert len(set(notes)) >= 3  # fewer time quantiles as the folds grow


def test_split_stage_on_a_survival_cohort_balances_events(tmp_path, monkeypatch):
    from slidemil.pipeline import cli

    pd.DataFrame(_rows(60)).to_csv(tmp_path / "cohort.csv", index=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "cohort": "cohort.csv", "task": {"type": "survival", "time": "OS months", "event": "vital"},
        "split": {"n_folds": 3, "require_features": False}}))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["split"]) == 0
    splits = json.loads((tmp_path / "data/splits.json").read_text())
    assert splits["task"]["time"] == "OS months" and splits["task"]["event"] == "vital"
    events = [sum(splits["targets"][s]["event"] for s in fold["test"]) for fold in splits["folds"]]
    assert max(events) - min(events) <= 2, events
    for fold in splits["folds"]:  # patient-grouped
        test_patients = {splits["patients"][s] for s in fold["test"]}
        assert not test_patients & {splits["patients"][s] for s in fold["train"] + fold["val"]}


def test_documented_survival_recipe_splits_the_constructed_demo_cohort(tmp_path, monkeypatch):
    """README's recipe: params-survival.yaml from runs/survival/ on demo/cohort_survival.csv."""
    import shutil
    from pathlib import Path

    from slidemil.pipeline import cli

    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "demo").mkdir()
    shutil.copy(repo / "demo/cohort_survival.csv", tmp_path / "demo")
    shutil.copy(repo / "params-survival.yaml", tmp_path)
    run = tmp_path / "runs/survival"
    run.mkdir(parents=True)
    monkeypatch.chdir(run)
    monkeypatch.setattr(cli, "STAGES", {"split": cli.STAGES["split"]})
    # the demo pipeline's manifests (the recipe checks features): two slides failed or were skipped in tiling
    ids = pd.read_csv(repo / "demo/cohort_survival.csv", dtype=str)["slide_id"].tolist()
    status = ["failed", "skipped"] + ["ok"] * (len(ids) - 2)
    for stage in ("tiles", "features"):
        (tmp_path / "data" / stage).mkdir(parents=True)
        pd.DataFrame({"slide_id": ids, "status": status, "reason": ""}).to_csv(
            tmp_path / "data" / stage / "manifest.csv", index=False)
    assert cli.main(["split", "--params", "../../params-survival.yaml"]) == 0
    splits = json.loads((run / "data/splits.json").read_text())
    assert splits["task"]["time"] == "os_months" and len(splits["targets"]) == len(ids) - 2
    assert set(ids[:2]) <= set(splits["excluded"])
    assert all(any(splits["targets"][s]["event"] for s in fold["test"]) for fold in splits["folds"])
