"""Turning the cohort table into the labelled slides of a task, loudly.

Pure functions: they return the kept slides, the excluded ones with a reason each, and the warnings
to show; the ``split`` stage does the logging and writing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from slidemil.core.errors import CohortError
from slidemil.splits.task import Task

LABEL_CONFLICT_POLICIES = ("error", "majority", "slide-level")


@dataclass
class LabelledCohort:
    """The slides usable for a task.

    Attributes:
        slides: one row per kept slide: ``row`` (CSV line), ``slide_id``, ``patient_id``, ``label``
            (class name), plus ``site`` when a site column is used.
        classes: class names in index order.
        excluded: ``{slide_id: reason}`` for every cohort slide left out.
        warnings: messages the caller should show.
    """

    slides: pd.DataFrame
    classes: tuple[str, ...]
    excluded: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def label_cohort(cohort: pd.DataFrame, task: Task, label_conflict: str = "error",
                 site_column: str = "") -> LabelledCohort:
    """Attach each slide's class, excluding empty and unknown labels, resolving patient-level conflicts.

    Args:
        cohort: the table from :func:`splits.cohort.load_cohort`.
        task: label column and classes (empty classes → sorted unique non-empty labels).
        label_conflict: what to do when one patient's slides carry different labels: ``error``
            (default), ``majority`` (every slide of the patient takes the patient's most common label;
            a tie excludes the patient), ``slide-level`` (each slide keeps its own label; the patient
            still stays in one part of each fold).
        site_column: optional column naming each slide's site (hospital / TCGA tissue source site).

    Raises:
        CohortError: label or site column missing, conflicting labels under ``error``, blank site,
            a patient at two sites.
    """
    if label_conflict not in LABEL_CONFLICT_POLICIES:
        raise CohortError(f"split.label_conflict must be one of {LABEL_CONFLICT_POLICIES}, got {label_conflict!r}")
    for column in (task.label, site_column):
        if column and column not in cohort.columns:
            raise CohortError(
                f"cohort table has no column {column!r} (columns: "
                f"{', '.join(str(c) for c in cohort.columns if c != 'row')}); "
                "fix task.label / split.site_column in params.yaml"
            )
    classes = task.resolve_classes(cohort[task.label])
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "no label at all"
        raise CohortError(
            f"column {task.label!r} of the cohort table holds {found}: a classification task needs at least two "
            "classes; fill in the labels or name another column in task.label"
        )
    excluded: dict[str, str] = {}
    for sid, label in zip(cohort["slide_id"], cohort[task.label], strict=True):
        if label == "":
            excluded[sid] = f"empty label in column {task.label!r}"
        elif label not in classes:
            excluded[sid] = f"unknown label {label!r} (task.classes: {', '.join(classes)})"
    keep = ~cohort["slide_id"].isin(excluded)
    columns = {"row": "row", "slide_id": "slide_id", "patient_id": "patient_id", task.label: "label"}
    if site_column:
        columns[site_column] = "site"
    slides = cohort.loc[keep, list(columns)].rename(columns=columns).reset_index(drop=True)
    slides, conflict_excluded, warnings = _resolve_conflicts(slides, label_conflict, task.label)
    excluded.update(conflict_excluded)
    if site_column:
        _check_sites(slides, site_column)
    return LabelledCohort(slides=slides, classes=classes, excluded=excluded, warnings=warnings)


def _resolve_conflicts(slides: pd.DataFrame, policy: str, label_column: str
                       ) -> tuple[pd.DataFrame, dict[str, str], list[str]]:
    per_patient = slides.groupby("patient_id", sort=True)["label"]
    mixed = [pid for pid, labels in per_patient if labels.nunique() > 1]
    if not mixed:
        return slides, {}, []
    detail = "; ".join(
        f"{pid}: " + ", ".join(f"{s}={lab}" for s, lab in
                               slides.loc[slides["patient_id"] == pid, ["slide_id", "label"]].itertuples(index=False))
        for pid in mixed[:10]
    ) + (f"; … ({len(mixed)} patients)" if len(mixed) > 10 else "")
    if policy == "error":
        raise CohortError(
            f"{len(mixed)} patient(s) have slides with different {label_column!r} labels: {detail}. "
            "Fix the labels, or set split.label_conflict to 'majority' (patient takes its most common label) "
            "or 'slide-level' (each slide keeps its own label)"
        )
    if policy == "slide-level":
        return slides, {}, [f"label_conflict=slide-level keeps different labels within {len(mixed)} patient(s): {detail}"]
    excluded: dict[str, str] = {}
    slides = slides.copy()
    relabelled = 0
    for pid in mixed:
        rows = slides["patient_id"] == pid
        counts = Counter(slides.loc[rows, "label"]).most_common()
        if len(counts) > 1 and counts[0][1] == counts[1][1]:
            tie = ", ".join(f"{lab}×{n}" for lab, n in counts)
            for sid in slides.loc[rows, "slide_id"]:
                excluded[sid] = f"patient {pid}: label tie ({tie}) under label_conflict=majority"
            continue
        relabelled += int((slides.loc[rows, "label"] != counts[0][0]).sum())
        slides.loc[rows, "label"] = counts[0][0]
    slides = slides[~slides["slide_id"].isin(excluded)].reset_index(drop=True)
    warning = (f"label_conflict=majority relabelled {relabelled} slide(s) to their patient's most common label "
               f"and excluded {len(excluded)} slide(s) of tied patients: {detail}")
    return slides, excluded, [warning]


def _check_sites(slides: pd.DataFrame, site_column: str) -> None:
    blank = slides.loc[slides["site"] == "", "row"].tolist()
    if blank:
        raise CohortError(f"blank {site_column!r} on cohort line(s) {', '.join(map(str, blank))}; fill them in")
    sites = slides.groupby("patient_id")["site"].nunique()
    multi = sites[sites > 1].index.tolist()
    if multi:
        raise CohortError(
            f"patient(s) {', '.join(multi[:10])} have slides at more than one {site_column!r}; "
            "leave-one-site-out needs each patient at one site"
        )


def feature_exclusions(slide_ids: list[str], manifests: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Slides the tiles / features manifests do not mark ``ok``, with the reason.

    Args:
        slide_ids: slides to check.
        manifests: ``{manifest path: table}`` with at least ``slide_id`` and ``status`` columns
            (``reason`` used when present). When a slide has several rows, the last one counts.

    Returns:
        ``{slide_id: reason}``, e.g. ``"data/features/manifest.csv: failed (CUDA out of memory)"`` or
        ``"not in data/tiles/manifest.csv"``.
    """
    excluded: dict[str, str] = {}
    for name, table in manifests.items():
        last = table.drop_duplicates("slide_id", keep="last").set_index("slide_id")
        for sid in slide_ids:
            if sid in excluded:
                continue
            if sid not in last.index:
                excluded[sid] = f"not in {name} (not processed yet?)"
            elif last.at[sid, "status"] != "ok":
                reason = str(last.at[sid, "reason"]) if "reason" in last.columns else ""
                excluded[sid] = f"{name}: {last.at[sid, 'status']}" + (f" ({reason})" if reason else "")
    return excluded


def check_fold_feasibility(slides: pd.DataFrame, classes: tuple[str, ...], n_folds: int, what: str = "") -> None:
    """Every class needs at least ``n_folds`` patients, or some test fold cannot hold it.

    Raises:
        CohortError: listing each class with its patient count and the largest feasible number of folds.
    """
    counts = {c: int(slides.loc[slides["label"] == c, "patient_id"].nunique()) for c in classes}
    if min(counts.values(), default=0) >= n_folds:
        return
    absent = [c for c, n in counts.items() if n == 0]
    if absent:
        raise CohortError(
            f"no labelled slide of class {', '.join(map(repr, absent))} although task.classes names it "
            f"(patients per class: {', '.join(f'{c}: {n}' for c, n in counts.items())}); check the label "
            "column, or drop the class from task.classes"
        )
    largest = min(counts.values(), default=0)
    listing = ", ".join(f"{c}: {n} patient(s)" for c, n in counts.items())
    way_out = (f"the largest feasible number of folds is {largest}: set split.n_folds={largest}"
               if largest >= 2 else
               "cross-validation needs ≥ 2 patients per class: merge or drop the small class (task.classes)")
    raise CohortError(f"{n_folds}-fold CV{what} needs ≥ {n_folds} patients per class; have {listing}; {way_out}")
