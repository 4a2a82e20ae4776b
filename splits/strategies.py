"""Patient-grouped, class-stratified fold assignment (pure; scikit-learn does the stratification).

Every strategy assigns whole *patients* (never single slides) to train / val / test, so the slides of
one patient (e.g. TCGA ``-DX1`` and ``-DX2``) always stay together. Stratification works on one row per
patient (its label; under ``label_conflict=slide-level`` its most common label), which keeps each class's
patient count per fold within one of the ideal. Patients are sorted by ID first, so the folds depend on
the seed and the cohort's content, not on its row order.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from slidemil.core.errors import CohortError
from slidemil.splits.validate import check_fold_feasibility

STRATEGIES = ("kfold", "holdout+kfold", "leave-one-site-out")


@dataclass(frozen=True)
class SplitConfig:
    """How to split (the ``split:`` params that shape the folds).

    Attributes:
        n_folds: k of the k-fold CV (ignored by leave-one-site-out: one fold per site).
        val_fraction: share of each fold's training patients held out for validation (0 → no val).
            Carved by a grouped stratified k-fold with k = round(1 / val_fraction), so the realised
            share is 1/k (0.2 → 1/5, 0.15 → 1/7).
        seeds: one CV repeat per seed.
        test_fraction: share of patients in a fixed held-out test set (0 → none); CV then runs on the
            rest and each fold's ``val`` is that CV fold's held-out part.
        use_sites: leave-one-site-out on the ``site`` column (validation made of whole training sites).
    """

    n_folds: int = 5
    val_fraction: float = 0.2
    seeds: tuple[int, ...] = (0,)
    test_fraction: float = 0.0
    use_sites: bool = False

    @property
    def strategy(self) -> str:
        if self.use_sites:
            return "leave-one-site-out"
        return "holdout+kfold" if self.test_fraction > 0 else "kfold"


def make_folds(slides: pd.DataFrame, classes: tuple[str, ...], config: SplitConfig
               ) -> tuple[list[dict[str, Any]], list[str]]:
    """Assign the labelled slides to folds.

    Args:
        slides: one row per slide with ``slide_id``, ``patient_id``, ``label`` (and ``site`` when
            ``config.use_sites``).
        classes: class names (for the feasibility check).
        config: strategy parameters.

    Returns:
        ``(folds, warnings)``: folds as ``[{"fold", "repeat", "train", "val", "test"}]`` with sorted
        slide_id lists; warnings to show the user.

    Raises:
        CohortError: a class has fewer patients than folds (with the largest feasible k), fewer than
            two sites, too few patients to carve a validation or test set.
    """
    patients = _patient_table(slides, config.use_sites)
    notes: list[str] = []
    if config.use_sites:
        parts = _leave_one_site_out(patients, config, notes)
    elif config.test_fraction > 0:
        dev, held_out = _carve(patients, config.test_fraction, config.seeds[0], "held-out test set")
        check_fold_feasibility(slides[slides["patient_id"].isin(patients.loc[dev, "patient_id"])], classes,
                               config.n_folds, " on the patients outside the held-out test set")
        parts = []
        for seed in config.seeds:
            for val in _stratified_parts(patients.loc[dev], config.n_folds, seed):
                parts.append((np.setdiff1d(dev, val), val, held_out))
    else:
        check_fold_feasibility(slides, classes, config.n_folds)
        parts = []
        for seed in config.seeds:
            for test in _stratified_parts(patients, config.n_folds, seed):
                train = np.setdiff1d(patients.index, test)
                train, val = _carve(patients.loc[train], config.val_fraction, seed, "validation set")
                parts.append((train, val, test))
    n_per_repeat = len(parts) // len(config.seeds)
    slides_of = slides.groupby("patient_id")["slide_id"].agg(list)
    folds = []
    for i, (train, val, test) in enumerate(parts):
        fold = {"fold": i % n_per_repeat, "repeat": i // n_per_repeat}
        for name, idx in (("train", train), ("val", val), ("test", test)):
            fold[name] = sorted(s for pid in patients.loc[idx, "patient_id"] for s in slides_of[pid])
        folds.append(fold)
    return folds, notes


def _patient_table(slides: pd.DataFrame, use_sites: bool) -> pd.DataFrame:
    """One row per patient (sorted by ID): ``patient_id``, ``stratum`` (most common label, ties → first by name), ``site``."""
    rows = []
    for pid, group in slides.groupby("patient_id", sort=True):
        counts = group["label"].value_counts()
        stratum = sorted(counts[counts == counts.max()].index)[0]
        rows.append({"patient_id": pid, "stratum": stratum, "site": group["site"].iloc[0] if use_sites else pid})
    return pd.DataFrame(rows)


def _stratified_parts(patients: pd.DataFrame, n_splits: int, seed: int, by: str = "patient_id") -> list[np.ndarray]:
    """Split patients into ``n_splits`` stratified parts, grouped by ``by``; returns index arrays of ``patients``."""
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # sklearn warns when a class has fewer groups than n_splits; the caller checks feasibility itself
        # and reports parts that lack a class by name (summary.missing_class_warnings).
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = splitter.split(patients, patients["stratum"], groups=patients[by])
        return [patients.index[test] for _, test in splits]


def _carve(patients: pd.DataFrame, fraction: float, seed: int, what: str, by: str = "patient_id"
           ) -> tuple[np.ndarray, np.ndarray]:
    """Hold out about ``fraction`` of ``patients`` (grouped by ``by``, stratified); returns (rest, carved) indexes."""
    if fraction <= 0:
        return patients.index.to_numpy(), patients.index[:0].to_numpy()
    # sklearn needs n_splits ≤ the groups, and ≤ the patients of the largest class: tiny cohorts get a
    # larger share (1/n_splits) rather than an error.
    n_splits = min(max(2, round(1 / fraction)), patients[by].nunique(), patients["stratum"].value_counts().max())
    if n_splits < 2:
        raise CohortError(f"cannot carve a {what} from {len(patients)} patient(s) "
                          f"({patients[by].nunique()} {'site' if by == 'site' else 'patient'} group(s)); "
                          "add patients or set its fraction to 0")
    carved = _stratified_parts(patients, n_splits, seed, by)[0]
    return np.setdiff1d(patients.index, carved), carved


def _leave_one_site_out(patients: pd.DataFrame, config: SplitConfig, notes: list[str]
                        ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    sites = sorted(patients["site"].unique())
    if len(sites) < 2:
        raise CohortError(f"leave-one-site-out needs ≥ 2 sites, the cohort has {sites}; "
                          "set split.site_column to '' for patient-grouped k-fold")
    parts = []
    for seed in config.seeds:
        for site in sites:
            test = patients.index[patients["site"] == site].to_numpy()
            training = patients.loc[np.setdiff1d(patients.index, test)]
            by = "site" if training["site"].nunique() >= 2 else "patient_id"
            if by == "patient_id" and config.val_fraction > 0 and seed == config.seeds[0]:
                notes.append(f"site {site!r} out: only one training site, validation is carved by patient instead")
            train, val = _carve(training, config.val_fraction, seed, "validation set", by)
            parts.append((train, val, test))
    return parts
