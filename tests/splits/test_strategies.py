"""Fold assignment: patient grouping, stratification quality, pre-checks, determinism, strategies."""

from __future__ import annotations

import pandas as pd
import pytest

from slidemil.core.errors import CohortError
from slidemil.splits.strategies import SplitConfig, make_folds


def slides_of(rows) -> pd.DataFrame:
    return pd.DataFrame(rows)[["slide_id", "patient_id", "label", "site"]]


def patient_parts(fold, patients):
    return {part: {patients[s] for s in fold[part]} for part in ("train", "val", "test")}


def test_dx1_dx2_slides_of_a_patient_stay_together_and_parts_are_disjoint(tcga):
    slides = slides_of(tcga({"luad": 12, "lusc": 10}, two_slides_every=2))
    patients = dict(zip(slides["slide_id"], slides["patient_id"], strict=True))
    folds, _ = make_folds(slides, ("luad", "lusc"), SplitConfig(n_folds=4))
    assert len(folds) == 4
    for fold in folds:
        parts = patient_parts(fold, patients)
        assert not parts["train"] & parts["val"] and not parts["train"] & parts["test"] and not parts["val"] & parts["test"]
        for part in ("train", "val", "test"):  # both DX slides of a patient in this part, or neither
            for sid in fold[part]:
                if sid.endswith("-DX1") and sid.replace("-DX1", "-DX2") in patients:
                    assert sid.replace("-DX1", "-DX2") in fold[part]
        assert sorted(fold["train"] + fold["val"] + fold["test"]) == sorted(slides["slide_id"])
    tests = sorted(s for f in folds for s in f["test"])
    assert tests == sorted(slides["slide_id"])  # every slide in exactly one test set


def test_four_patients_five_folds_error_names_counts_and_largest_k(tcga):
    slides = slides_of(tcga({"a": 2, "b": 2}))
    with pytest.raises(CohortError, match=r"a: 2 patient\(s\), b: 2 patient\(s\); the largest feasible number "
                                          r"of folds is 2: set split.n_folds=2"):
        make_folds(slides, ("a", "b"), SplitConfig(n_folds=5))


def test_class_with_two_patients_among_forty(tcga):
    slides = slides_of(tcga({"common": 38, "rare": 2}))
    with pytest.raises(CohortError, match=r"rare: 2 patient\(s\).*largest feasible number of folds is 2"):
        make_folds(slides, ("common", "rare"), SplitConfig(n_folds=5))
    folds, _ = make_folds(slides, ("common", "rare"), SplitConfig(n_folds=2))
    rare = set(slides.loc[slides["label"] == "rare", "patient_id"])
    patients = dict(zip(slides["slide_id"], slides["patient_id"], strict=True))
    for fold in folds:  # one rare patient tested per fold, the other trains (or validates)
        assert len(patient_parts(fold, patients)["test"] & rare) == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_class_proportions_within_one_patient_of_ideal(tcga, seed):
    counts = {"a": 23, "b": 14, "c": 8}
    slides = slides_of(tcga(counts))
    label_of = dict(zip(slides["patient_id"], slides["label"], strict=True))
    patients = dict(zip(slides["slide_id"], slides["patient_id"], strict=True))
    k = 5
    folds, _ = make_folds(slides, tuple(counts), SplitConfig(n_folds=k, seeds=(seed,)))
    for fold in folds:
        tested = patient_parts(fold, patients)["test"]
        for label, n in counts.items():
            assert abs(sum(label_of[p] == label for p in tested) - n / k) <= 1


def test_validation_is_carved_from_training_patients_at_the_fraction(tcga):
    slides = slides_of(tcga({"a": 30, "b": 20}))
    patients = dict(zip(slides["slide_id"], slides["patient_id"], strict=True))
    folds, _ = make_folds(slides, ("a", "b"), SplitConfig(n_folds=5, val_fraction=0.25))
    for fold in folds:
        parts = patient_parts(fold, patients)
        share = len(parts["val"]) / (len(parts["val"]) + len(parts["train"]))
        assert abs(share - 0.25) < 0.05
        assert set(slides.loc[slides["patient_id"].isin(parts["val"]), "label"]) == {"a", "b"}
    no_val, _ = make_folds(slides, ("a", "b"), SplitConfig(n_folds=5, val_fraction=0.0))
    assert all(f["val"] == [] for f in no_val)


def test_deterministic_for_a_seed_different_across_seeds_independent_of_row_order(tcga):
    slides = slides_of(tcga({"a": 20, "b": 15}))
    config = SplitConfig(n_folds=5, seeds=(7,))
    first, _ = make_folds(slides, ("a", "b"), config)
    shuffled, _ = make_folds(slides.sample(frac=1.0, random_state=3), ("a", "b"), config)
    assert first == make_folds(slides, ("a", "b"), config)[0]
    assert first == shuffled
    other, _ = make_folds(slides, ("a", "b"), SplitConfig(n_folds=5, seeds=(8,)))
    assert [f["test"] for f in first] != [f["test"] for f in other]


def test_repeats_number_folds_per_repeat(tcga):
    slides = slides_of(tcga({"a": 10, "b": 10}))
    folds, _ = make_folds(slides, ("a", "b"), SplitConfig(n_folds=3, seeds=(0, 1)))
    assert [(f["repeat"], f["fold"]) for f in folds] == [(r, k) for r in range(2) for k in range(3)]
    for repeat in (0, 1):
        tests = sorted(s for f in folds if f["repeat"] == repeat for s in f["test"])
        assert tests == sorted(slides["slide_id"])
    assert [f["test"] for f in folds[:3]] != [f["test"] for f in folds[3:]]


def test_fixed_held_out_test_set_with_cv_on_the_rest(tcga):
    slides = slides_of(tcga({"a": 25, "b": 15}))
    patients = dict(zip(slides["slide_id"], slides["patient_id"], strict=True))
    folds, _ = make_folds(slides, ("a", "b"), SplitConfig(n_folds=4, test_fraction=0.2, seeds=(0, 1)))
    held_out = folds[0]["test"]
    assert all(f["test"] == held_out for f in folds)  # fixed across folds and repeats
    assert abs(len({patients[s] for s in held_out}) / 40 - 0.2) <= 0.03
    assert {slides.set_index("slide_id").loc[s, "label"] for s in held_out} == {"a", "b"}
    for repeat in (0, 1):  # CV on the rest: each development slide validates exactly once
        vals = sorted(s for f in folds if f["repeat"] == repeat for s in f["val"])
        assert vals == sorted(set(slides["slide_id"]) - set(held_out))
    for fold in folds:
        parts = patient_parts(fold, patients)
        assert not parts["train"] & parts["val"] and not (parts["train"] | parts["val"]) & parts["test"]


def test_leave_one_site_out_with_site_preserved_validation(tcga):
    slides = slides_of(tcga({"a": 20, "b": 16}, sites=4))
    site_of = dict(zip(slides["slide_id"], slides["site"], strict=True))
    folds, notes = make_folds(slides, ("a", "b"), SplitConfig(n_folds=5, val_fraction=0.3, use_sites=True))
    assert [f["fold"] for f in folds] == [0, 1, 2, 3]
    for fold, site in zip(folds, ["S0", "S1", "S2", "S3"], strict=True):
        assert {site_of[s] for s in fold["test"]} == {site}
        assert fold["test"] == sorted(slides.loc[slides["site"] == site, "slide_id"])
        val_sites, train_sites = {site_of[s] for s in fold["val"]}, {site_of[s] for s in fold["train"]}
        assert len(val_sites) == 1 and not val_sites & train_sites and site not in train_sites | val_sites
    assert notes == []


def test_leave_one_site_out_needs_two_sites(tcga):
    slides = slides_of(tcga({"a": 4, "b": 4}, sites=1))
    with pytest.raises(CohortError, match="≥ 2 sites"):
        make_folds(slides, ("a", "b"), SplitConfig(use_sites=True))
