"""Patient-grouped, stratified cross-validation folds from the cohort table, for every task kind.

Reads `cohort:` and the `task:` / `split:` sections of params.yaml, writes data/splits.json (folds of
slide_ids; every patient in one part of each fold) and a per-fold table beside it (data/splits_summary.csv).
What the folds are stratified on follows `task.type`:
  classification  the class (task.label)
  survival        the event status (task.event) crossed with follow-up time quartiles (task.time) where every
                  stratum has enough patients; the feasibility check counts events per fold
  regression      up to 4 quantile bins of the target (task.label)

Strategies: stratified patient-grouped k-fold with a validation set carved from each fold's training
patients (default); a fixed held-out test set with CV on the rest (split.test_fraction > 0); repeated CV
(split.repeats or split.seeds); leave-one-site-out (split.site_column).

Slides are excluded, each with its reason in the file's `excluded` map, when their target is empty (or,
for classification, not in task.classes), and (split.require_features) when the tiles/features manifests do
not mark them ok.

The `split:` keys and their defaults are listed below; `task:` names the task kind and its columns
(label; time and event for survival), the classes (order = class index; [] → sorted labels) and whether
they are ordered.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, StrictBool, model_validator

from slidemil.core import provenance
from slidemil.core.atomic import write_csv
from slidemil.core.errors import ParamsError, StoreError
from slidemil.core.params import Section, read_section
from slidemil.pipeline.preflight import check_ids_match

if TYPE_CHECKING:
    import pandas as pd

    from slidemil.splits.strategies import SplitConfig

HELP = "patient-grouped stratified CV folds → data/splits.json"

class SplitSection(Section):
    """The ``split:`` params section."""

    n_folds: int = Field(5, ge=2, description="k of k-fold CV (leave-one-site-out: one fold per site)")
    val_fraction: float = Field(0.2, ge=0, lt=1, description="share of each fold's training patients held out "
                                "for validation (0: none), realised as 1/round(1/val_fraction)")
    seed: int = Field(0, description="seed of the first repeat")
    repeats: int = Field(1, ge=1, description="repeated CV: seeds seed, seed+1, …")
    seeds: list[int] = Field(default_factory=list, description="explicit seeds (one repeat each); overrides "
                             "seed/repeats")
    test_fraction: float = Field(0.0, ge=0, lt=1, description="fixed held-out test set share of patients; CV on "
                                 "the rest gives val (0: plain k-fold)")
    site_column: str = Field("", description="cohort column with the site → leave-one-site-out")
    label_conflict: Literal["error", "majority", "slide-level"] = Field(
        "error", description="a patient with slides of different labels: error | majority | slide-level")
    require_features: StrictBool = Field(True, description="exclude slides the manifests below do not mark ok")
    features_manifest: str = Field("data/features/manifest.csv", description="empty: not checked")
    tiles_manifest: str = Field("data/tiles/manifest.csv", description="empty: not checked")
    output: str = Field("data/splits.json", description="the splits file (summary table beside it)")

    @model_validator(mode="after")
    def _consistent(self) -> SplitSection:
        if self.site_column and self.test_fraction > 0:
            raise ParamsError("split.site_column (leave-one-site-out) and split.test_fraction cannot be combined")
        if len(set(self.seeds)) < len(self.seeds):
            raise ParamsError(f"split.seeds must be distinct integers, got {self.seeds!r}")
        if self.seeds and self.repeats not in (1, len(self.seeds)):
            raise ParamsError(f"split.repeats={self.repeats} disagrees with {len(self.seeds)} split.seeds; "
                              "give one of them")
        return self


SECTION = SplitSection  # the CLI validates every stage's section before any stage works

log = logging.getLogger(__name__)


def run(params: dict[str, Any], args: argparse.Namespace) -> int:
    """Build and write the splits; returns 0 (user errors raise SlidemilError subclasses)."""
    from slidemil.splits.cohort import load_cohort
    from slidemil.splits.guard import check_splits
    from slidemil.splits.io import build_splits, read_manifest, write_splits
    from slidemil.splits.strategies import make_folds
    from slidemil.splits.summary import fold_summary, missing_class_warnings
    from slidemil.splits.targets import assign_strata, target_cohort, targets_of
    from slidemil.splits.task import load_task
    from slidemil.splits.validate import feature_exclusions, label_cohort

    section = read_section(params, "split", SplitSection)
    config = _split_config(section)
    task = load_task(params)
    if not params.get("cohort"):
        raise ParamsError("params.yaml has no `cohort:` (path to the cohort CSV)")

    output = Path(section.output)
    if section.require_features:  # stale inputs are refused before the old splits are touched: their own
        for key, stage in (("tiles_manifest", "tile"), ("features_manifest", "extract")):  # check names the stage
            path = getattr(section, key)
            if path and Path(path).is_file():
                provenance.check_chain(path, stage)
    if output.is_file():
        provenance.begin(output, "split")  # a failing run must not leave the old splits looking current
    cohort = load_cohort(params["cohort"])
    if task.type == "classification":
        labelled = label_cohort(cohort, task, section.label_conflict, section.site_column)
    else:
        labelled = target_cohort(cohort, task, section.site_column)
    excluded = dict(labelled.excluded)
    slides = labelled.slides
    if section.require_features:
        manifests = {}
        for key in ("tiles_manifest", "features_manifest"):
            path = getattr(section, key)
            if path:
                table = read_manifest(path)
                if table is None:
                    log.warning("split.%s %s does not exist; not checked", key, path)
                else:
                    manifests[path] = table
        if not manifests:
            from slidemil.pipeline.preflight import upstream_hint

            raise StoreError(
                "split.require_features is true but no tiles/features manifest exists "
                f"({section.tiles_manifest!r}, {section.features_manifest!r}); run `slidemil extract` first, "
                "or set split.require_features=false to split the whole cohort (training then checks the "
                "features with the leakage guard)"
                + upstream_hint(params, "split.tiles_manifest", section.tiles_manifest, "tile.output", "manifest.csv")
                + upstream_hint(params, "split.features_manifest", section.features_manifest, "extract.output",
                                "manifest.csv")
            )
        check_ids_match(slides["slide_id"].tolist(), manifests)
        failed = feature_exclusions(slides["slide_id"].tolist(), manifests)
        excluded.update(failed)
        slides = slides[~slides["slide_id"].isin(failed)].reset_index(drop=True)

    classes, extra = labelled.classes, None
    if task.type != "classification":
        slides, classes, note = assign_strata(slides, task.type, config.n_folds)
        log.info("%s task: %s", task.type, note)
        extra = {"task": {"type": task.type, "level": task.level, "label": task.label, "time": task.time,
                          "event": task.event}, "targets": targets_of(slides, task.type)}
    elif task.level != "slide":
        extra = {"task": {"type": task.type, "level": task.level, "label": task.label}}
    folds, notes = make_folds(slides, classes, config)
    splits = build_splits(task.label, classes, config.seeds, config.strategy, folds, excluded, slides, extra)
    check_splits(splits, None)
    summary = fold_summary(splits)

    for message in labelled.warnings + notes + missing_class_warnings(summary, splits["classes"]):
        log.warning("%s", message)
    _log_counts(len(cohort), slides, excluded)
    _warn_if_changed(output, splits)
    write_splits(output, splits)
    inputs = {path: provenance.file_digest(path) for path in (params["cohort"], section.tiles_manifest,
                                                              section.features_manifest) if path and Path(path).is_file()}
    provenance.record(output, "split", {**inputs, "task and split params": provenance.value_digest(
        {"task": params.get("task"), "split": section.model_dump()})})
    summary_path = output.with_name(f"{output.stem}_summary.csv")
    write_csv(summary_path, summary)
    log.info("%s: %s, %d fold(s) × %d repeat(s)\n%s", output, config.strategy, splits["n_folds"],
             len(config.seeds), summary.to_string(index=False))
    log.info("per-fold class counts written to %s", summary_path)
    return 0


def _split_config(section: SplitSection) -> SplitConfig:
    from slidemil.splits.strategies import SplitConfig

    seeds = section.seeds or [section.seed + i for i in range(section.repeats)]
    return SplitConfig(n_folds=section.n_folds, val_fraction=section.val_fraction, seeds=tuple(seeds),
                       test_fraction=section.test_fraction, use_sites=bool(section.site_column))


def _log_counts(n_cohort: int, slides: pd.DataFrame, excluded: dict[str, str]) -> None:
    log.info("%d of %d cohort slides split (%d patients); %d excluded", len(slides), n_cohort,
             slides["patient_id"].nunique(), len(excluded))
    for reason, n in Counter(excluded.values()).most_common(10):
        log.warning("excluded %d slide(s): %s", n, reason)


def _warn_if_changed(output: Path, splits: dict[str, Any]) -> None:
    if not output.is_file():
        return
    try:
        previous = json.loads(output.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        previous = None
    if previous == json.loads(json.dumps(splits)):
        log.info("%s unchanged", output)
    else:
        log.warning("replacing %s with different folds: results trained on the previous splits are not "
                    "comparable with new ones", output)
