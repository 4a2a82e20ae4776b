"""The splits file (write / load / validate) and the leakage guard on hand-made leaky splits."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest

from slidemil.core.errors import LeakageError, StoreError
from slidemil.splits.guard import check_splits
from slidemil.splits.io import build_splits, load_splits, write_splits
from slidemil.splits.strategies import SplitConfig, make_folds


@pytest.fixture
def splits(tcga) -> dict:
    slides = pd.DataFrame(tcga({"a": 6, "b": 6}, two_slides_every=2))
    folds, _ = make_folds(slides, ("a", "b"), SplitConfig(n_folds=3))
    return build_splits("label", ("a", "b"), (0,), "kfold", folds, {"x": "empty label"}, slides)


def test_round_trip_and_clean_splits_pass(splits, tmp_path):
    write_splits(tmp_path / "splits.json", splits)
    loaded = load_splits(tmp_path / "splits.json")
    assert loaded == json.loads(json.dumps(splits))
    assert loaded["patients"]["TCGA-A0-0000-01Z-00-DX2"] == "TCGA-A0-0000"
    check_splits(loaded, set(loaded["labels"]) | {"an-unlabelled-slide"})


def test_patient_in_train_and_test_is_leakage(splits):
    leaky = copy.deepcopy(splits)
    fold = leaky["folds"][1]
    moved = next(s for s in fold["test"] if s.endswith("-DX2"))  # its DX1 twin stays in test
    fold["test"].remove(moved)
    fold["train"].append(moved)
    patient = splits["patients"][moved]
    with pytest.raises(LeakageError, match=rf"fold 1 \(repeat 0\): patient '{patient}' is in train .* and in test"):
        check_splits(leaky, None)


def test_slide_in_two_parts_and_unknown_slide(splits):
    twice = copy.deepcopy(splits)
    twice["folds"][0]["val"].append(twice["folds"][0]["test"][0])
    with pytest.raises(LeakageError, match="is in both val and test"):
        check_splits(twice, None)
    unknown = copy.deepcopy(splits)
    unknown["folds"][2]["train"].append("ghost")
    with pytest.raises(LeakageError, match="'ghost' in train is unknown"):
        check_splits(unknown, None)


def test_features_store_missing_split_slides(splits):
    features = set(splits["labels"]) - {"TCGA-A0-0007-01Z-00-DX1"}
    with pytest.raises(LeakageError, match=r"1 slide\(s\) in the splits have no complete features: TCGA-A0-0007"):
        check_splits(splits, features)


def test_load_splits_rejects_missing_corrupt_and_unknown_versions(splits, tmp_path):
    path = tmp_path / "splits.json"
    with pytest.raises(StoreError, match="run `slidemil split`"):
        load_splits(path)
    path.write_text("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        load_splits(path)
    write_splits(path, {**splits, "schema_version": 99})
    with pytest.raises(StoreError, match="schema_version 99"):
        load_splits(path)
    lost = copy.deepcopy(splits)
    lost["folds"][0]["test"].pop()
    write_splits(path, lost)
    with pytest.raises(StoreError, match="not in exactly one test set"):
        load_splits(path)
    relabelled = {**splits, "labels": {**splits["labels"], "TCGA-A0-0000-01Z-00-DX1": "c"}}
    write_splits(path, relabelled)
    with pytest.raises(StoreError, match=r"labels \['c'\] not in classes"):
        load_splits(path)
