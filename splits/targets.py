"""Survival and regression targets from the cohort table, checked cell by cell (pure functions).

A survival task reads the user's follow-up time column (a number > 0, any unit) and event column
(spellings in :data:`EVENT_SPELLINGS`); a regression task reads one numeric column. Rows with an empty
cell are excluded and counted; a bad cell stops the split with every bad row and the rule it breaks.
For the fold assignment every slide gets a *stratum* in the ``label`` column (survival: event status,
crossed with time quartiles where every stratum has enough patients; regression: target quantile), so
the patient-grouped stratified k-fold of :mod:`slidemil.splits.strategies` serves every kind.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from slidemil.core.errors import CohortError
from slidemil.splits.task import Task
from slidemil.splits.validate import LabelledCohort, _check_sites

#: accepted event-column spellings (case-insensitive) → 1 (event) / 0 (censored)
EVENT_SPELLINGS = {"1": 1, "0": 0, "1.0": 1, "0.0": 0, "true": 1, "false": 0, "yes": 1, "no": 0, "dead": 1,
                   "alive": 0, "event": 1, "censored": 0}
MAX_QUANTILES = 4


def target_cohort(cohort: pd.DataFrame, task: Task, site_column: str = "") -> LabelledCohort:
    """The slides of a survival or regression task with their targets.

    Args:
        cohort: the table from :func:`splits.cohort.load_cohort` (text cells, ``row`` = CSV line).
        task: ``type`` survival (``time``, ``event`` columns) or regression (``label`` column).
        site_column: optional site column (leave-one-site-out).

    Returns:
        :class:`LabelledCohort` whose ``slides`` hold ``row, slide_id, patient_id, label`` (the stratum, see
        :func:`assign_strata`), ``time`` (float) and ``event`` (int 0/1), or ``target`` (float), and ``site``.

    Raises:
        CohortError: a column is missing; bad cells (every bad row with its rule: non-numeric or non-positive
            time, an event spelling outside :data:`EVENT_SPELLINGS`, a non-numeric target); a patient whose
            slides disagree on the outcome (survival, or any kind at ``task.level: patient``); fewer than 2
            usable slides.
    """
    columns = [task.time, task.event] if task.type == "survival" else [task.label]
    for column in [*columns, site_column]:
        if column and column not in cohort.columns:
            raise CohortError(f"cohort table has no column {column!r} (columns: "
                              f"{', '.join(str(c) for c in cohort.columns if c != 'row')}); fix task.time / "
                              "task.event / task.label / split.site_column in params.yaml")
    cells = cohort[columns].apply(lambda col: col.astype(str).str.strip())
    empty = (cells == "").any(axis=1)
    excluded = {sid: f"empty {'/'.join(repr(c) for c in columns)}" for sid in cohort.loc[empty, "slide_id"]}
    kept = cohort.loc[~empty].reset_index(drop=True)
    cells = cells.loc[~empty].reset_index(drop=True)
    slides = kept[["row", "slide_id", "patient_id"]].copy()
    if site_column:
        slides["site"] = kept[site_column].to_numpy()
    problems: list[str] = []
    if task.type == "survival":
        slides["time"] = _numbers(cells[task.time], kept["row"], task.time, problems, positive=True)
        events = cells[task.event].str.lower().map(EVENT_SPELLINGS)
        for row, value in zip(kept.loc[events.isna(), "row"], cells.loc[events.isna(), task.event], strict=True):
            problems.append(f"line {row}: {task.event!r} = {value!r} is not an event spelling "
                            f"({'/'.join(k for k in EVENT_SPELLINGS if '.' not in k)})")
        slides["event"] = events.fillna(-1).astype(int).to_numpy()
        outcome = ["time", "event"]
    else:
        slides["target"] = _numbers(cells[task.label], kept["row"], task.label, problems, positive=False)
        outcome = ["target"]
    if problems:
        shown = "; ".join(problems[:20]) + (f"; … ({len(problems)} bad cells)" if len(problems) > 20 else "")
        where = cohort.attrs.get("path", "the cohort table")
        raise CohortError(f"bad {task.type} cells in {where}: {shown}. Fix those cells, or empty them "
                          "to exclude the slides")
    if task.type == "survival" or task.level == "patient":
        _check_patient_outcome(slides, outcome)
    if site_column:
        _check_sites(slides, site_column)
    if len(slides) < 2:
        raise CohortError(f"only {len(slides)} slide(s) with a usable {task.type} target; fill in the columns "
                          f"{', '.join(map(repr, columns))}")
    slides["label"] = ""
    return LabelledCohort(slides=slides, classes=(), excluded=excluded)


def assign_strata(slides: pd.DataFrame, kind: str, n_folds: int) -> tuple[pd.DataFrame, tuple[str, ...], str]:
    """Stratum of each slide for the stratified fold assignment, in its ``label`` column.

    Survival: event status (``event`` / ``censored``) crossed with quartiles of the follow-up time where
    every stratum holds ≥ ``n_folds`` patients (fewer time quantiles otherwise, down to event status alone).
    Regression: the largest number of target quantiles (≤ 4) whose every stratum holds ≥ ``n_folds`` patients.
    Quantiles are taken over patients (one row each), so a patient with many slides counts once.

    Returns:
        ``(slides with label, strata names in order, a note describing the stratification)``.
    """
    patients = slides.groupby("patient_id", sort=True).first()
    value = patients["time"] if kind == "survival" else patients["target"]
    for q in range(MAX_QUANTILES, 0, -1):
        bins = _quantile_bins(value.to_numpy(float), q)
        names = [f"q{b + 1}" for b in bins]
        if kind == "survival":
            status = np.where(patients["event"].to_numpy() == 1, "event", "censored")
            names = [s if q == 1 else f"{s}/t{n[1:]}" for s, n in zip(status, names, strict=True)]
        strata = pd.Series(names, index=patients.index)
        if strata.value_counts().min() >= n_folds or q == 1:
            break
    slides = slides.copy()
    slides["label"] = slides["patient_id"].map(strata).to_numpy()
    what = ("event status" + (f" × {q} follow-up time quantiles" if q > 1 else "")) if kind == "survival" else \
        f"{q} target quantile(s)"
    return slides, tuple(sorted(set(strata))), f"stratified on {what}"


def targets_of(slides: pd.DataFrame, kind: str) -> dict[str, object]:
    """``{slide_id: {"time", "event"}}`` (survival) or ``{slide_id: target}`` (regression), sorted by slide."""
    ordered = slides.sort_values("slide_id")
    if kind == "survival":
        return {s: {"time": float(t), "event": int(e)} for s, t, e in
                ordered[["slide_id", "time", "event"]].itertuples(index=False)}
    return {s: float(v) for s, v in ordered[["slide_id", "target"]].itertuples(index=False)}


def _quantile_bins(values: np.ndarray, q: int) -> np.ndarray:
    """Bin index 0..q-1 of each value by the (q-1) inner quantiles (ties go to the lower bin)."""
    if q <= 1:
        return np.zeros(len(values), dtype=int)
    cuts = np.quantile(values, np.arange(1, q) / q)
    return np.searchsorted(cuts, values, side="left")


def _numbers(cells: pd.Series, rows: pd.Series, column: str, problems: list[str], positive: bool) -> np.ndarray:
    values = pd.to_numeric(cells, errors="coerce").to_numpy(float)
    for row, cell, value in zip(rows, cells, values, strict=True):
        if not np.isfinite(value):
            problems.append(f"line {row}: {column!r} = {cell!r} is not a number")
        elif positive and value <= 0:
            problems.append(f"line {row}: {column!r} = {cell!r} is not > 0 (follow-up time)")
    return values


def _check_patient_outcome(slides: pd.DataFrame, outcome: list[str]) -> None:
    """A patient's slides share its outcome (survival: time and event; regression: the target)."""
    differing = [pid for pid, group in slides.groupby("patient_id", sort=True)
                 if (group[outcome].nunique() > 1).any()]
    if differing:
        detail = "; ".join(
            f"{pid}: " + ", ".join(f"line {r}" for r in slides.loc[slides["patient_id"] == pid, "row"])
            for pid in differing[:10])
        raise CohortError(f"{len(differing)} patient(s) have slides with different {'/'.join(outcome)} values "
                          f"({detail}); a patient's outcome must be the same on all its slides")
