"""The ``split`` stage through the CLI (``pipeline.cli.main``) in a project folder with a params.yaml."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest
import yaml

from slidemil.pipeline import cli
from slidemil.splits.guard import check_splits
from slidemil.splits.io import load_splits


@pytest.fixture
def project(tmp_path, monkeypatch, tcga):
    """A project folder: cohort.csv (41 patients, one empty label) + params.yaml; cwd set to it."""
    rows = tcga({"luad": 20, "lusc": 15, "rare": 6})
    rows.append({"slide_id": "TCGA-ZZ-9999-01Z-00-DX1", "path": "x.svs", "patient_id": "TCGA-ZZ-9999",
                 "label": "", "site": "ZZ"})
    pd.DataFrame(rows).to_csv(tmp_path / "cohort.csv", index=False)
    write_params(tmp_path, {"require_features": False})
    monkeypatch.chdir(tmp_path)
    # only the split stage: keeps this test independent of the other stage modules' imports
    monkeypatch.setattr(cli, "STAGES", {"split": cli.STAGES["split"]})
    return tmp_path


def write_params(folder, split: dict) -> None:
    params = {"cohort": "cohort.csv", "task": {"label": "label", "classes": []}, "split": split}
    (folder / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")


def test_split_stage_writes_valid_splits_and_summary(project, caplog):
    with caplog.at_level(logging.INFO):
        assert cli.main(["split"]) == 0
    splits = load_splits(project / "data" / "splits.json")
    check_splits(splits, set(splits["labels"]))
    assert splits["classes"] == ["luad", "lusc", "rare"]
    assert (splits["strategy"], splits["n_folds"], len(splits["folds"])) == ("kfold", 5, 5)
    assert splits["excluded"] == {"TCGA-ZZ-9999-01Z-00-DX1": "empty label in column 'label'"}
    assert len(splits["labels"]) == len(pd.read_csv(project / "cohort.csv")) - 1
    summary = pd.read_csv(project / "data" / "splits_summary.csv")
    assert len(summary) == 15
    test_rows = summary[summary["part"] == "test"]
    assert test_rows["n_slides"].sum() == len(splits["labels"])
    assert sorted(test_rows["rare_patients"]) == [1, 1, 1, 1, 2]  # 6 patients over 5 folds
    assert "rare_patients" in caplog.text  # the table is printed
    assert "excluded 1 slide(s): empty label" in caplog.text

    with caplog.at_level(logging.INFO):
        assert cli.main(["split"]) == 0
        assert "unchanged" in caplog.text
        assert cli.main(["split", "--set", "split.seed=3"]) == 0
    assert "replacing" in caplog.text
    assert json.loads((project / "data" / "splits.json").read_text())["seed"] == 3


def test_repeats_and_seeds_from_params(project):
    assert cli.main(["split", "--set", "split.repeats=3", "--set", "split.n_folds=3"]) == 0
    splits = load_splits(project / "data" / "splits.json")
    assert splits["seeds"] == [0, 1, 2] and len(splits["folds"]) == 9
    assert cli.main(["split", "--set", "split.seeds=[5, 9]", "--set", "split.n_folds=3"]) == 0
    assert load_splits(project / "data" / "splits.json")["seeds"] == [5, 9]


def test_user_errors_exit_2_with_a_message(project, caplog):
    assert cli.main(["split", "--set", "split.n_fold=3"]) == 2
    assert "did you mean 'n_folds'" in caplog.text
    assert cli.main(["split", "--set", "split.n_folds=7"]) == 2
    assert "rare: 6 patient(s); the largest feasible number of folds is 6" in caplog.text
    assert cli.main(["split", "--set", "split.label_conflict=vote"]) == 2
    assert not (project / "data" / "splits.json").exists()


def test_failed_features_are_excluded_with_their_reason(project, caplog):
    (project / "data" / "features").mkdir(parents=True)
    cohort = pd.read_csv(project / "cohort.csv", dtype=str, keep_default_na=False)
    manifest = pd.DataFrame({"slide_id": cohort["slide_id"], "status": "ok", "reason": ""})
    manifest.loc[3, ["status", "reason"]] = ["failed", "corrupt JPEG tile at level 0"]
    manifest = manifest.drop(index=5)
    manifest.to_csv(project / "data" / "features" / "manifest.csv", index=False)
    write_params(project, {"require_features": True})
    assert cli.main(["split"]) == 0
    excluded = load_splits(project / "data" / "splits.json")["excluded"]
    assert excluded[cohort.loc[3, "slide_id"]] == "data/features/manifest.csv: failed (corrupt JPEG tile at level 0)"
    assert excluded[cohort.loc[5, "slide_id"]] == "not in data/features/manifest.csv (not processed yet?)"
    assert "data/tiles/manifest.csv does not exist" in caplog.text

    (project / "data" / "features" / "manifest.csv").unlink()
    assert cli.main(["split"]) == 2
    assert "set split.require_features=false" in caplog.text


def test_warning_names_folds_whose_val_lacks_a_class(project, tcga, caplog):
    pd.DataFrame(tcga({"common": 38, "rare": 2})).to_csv(project / "cohort.csv", index=False)
    assert cli.main(["split", "--set", "split.n_folds=2"]) == 0
    lacking = [r.getMessage() for r in caplog.records if "has no slide of class" in r.getMessage()]
    assert lacking and all("val set has no slide of class(es) rare" in m for m in lacking)


def test_leave_one_site_out_via_params(project):
    assert cli.main(["split", "--set", "split.site_column=site"]) == 0
    splits = load_splits(project / "data" / "splits.json")
    assert splits["strategy"] == "leave-one-site-out" and splits["n_folds"] == 7  # sites A0..A6
