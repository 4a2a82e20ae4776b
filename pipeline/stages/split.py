"""Patient-grouped, class-stratified cross-validation folds from the cohort table.

Reads `cohort:` and the `task:` / `split:` sections of params.yaml, writes data/splits.json (folds of
slide_ids; every patient in one part of each fold) and a per-fold table of slides and patients per class
beside it (data/splits_summary.csv).

Strategies: stratified patient-grouped k-fold with a validation set carved from each fold's training
patients (default); a fixed held-out test set with CV on the rest (split.test_fraction > 0); repeated CV
(split.repeats or split.seeds); leave-one-site-out (split.site_column).

Slides are excluded, each with its reason in the file's `excluded` map, when their label is empty or
not in task.classes, and (split.require_features) when the tiles/features manifests do not mark them ok.

params.yaml `split:` keys (defaults): n_folds 5; val_fraction 0.2 (realised as 1/round(1/val_fraction)
of each fold's training patients); seed 0; repeats 1 or seeds [..]; test_fraction 0.0; site_column "";
label_conflict error | majority | slide-level; require_features true; features_manifest
data/features/manifest.csv; tiles_manifest data/tiles/manifest.csv; output data/splits.json.
`task:` keys: label (cohort column), classes (order = class index; [] → sorted labels), ordered.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slidemil.core.atomic import write_csv
from slidemil.core.errors import ParamsError, StoreError
from slidemil.core.params import stage_params

if TYPE_CHECKING:
    import pandas as pd

    from slidemil.splits.strategies import SplitConfig

HELP = "patient-grouped stratified CV folds → data/splits.json"

DEFAULTS: dict[str, Any] = {
    "n_folds": 5,  # k of k-fold CV (leave-one-site-out: one fold per site)
    "val_fraction": 0.2,  # share of each fold's training patients held out for validation (0 → none)
    "seed": 0,  # seed of the first repeat
    "repeats": 1,  # repeated CV: seeds seed, seed+1, …
    "seeds": [],  # explicit seeds (one repeat each); overrides seed/repeats
    "test_fraction": 0.0,  # fixed held-out test set share of patients; CV on the rest gives val (0 → plain k-fold)
    "site_column": "",  # cohort column with the site → leave-one-site-out
    "label_conflict": "error",  # patient with slides of different labels: error | majority | slide-level
    "require_features": True,  # exclude slides the manifests below do not mark ok
    "features_manifest": "data/features/manifest.csv",  # "" → not checked
    "tiles_manifest": "data/tiles/manifest.csv",  # "" → not checked
    "output": "data/splits.json",
}

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

    section = stage_params(params, "split", DEFAULTS)
    config = _split_config(section)
    task = load_task(params)
    if not params.get("cohort"):
        raise ParamsError("params.yaml has no `cohort:` (path to the cohort CSV)")

    cohort = load_cohort(params["cohort"])
    if task.type == "classification":
        labelled = label_cohort(cohort, task, section["label_conflict"], section["site_column"])
    else:
        labelled = target_cohort(cohort, task, section["site_column"])
    excluded = dict(labelled.excluded)
    slides = labelled.slides
    if section["require_features"]:
        manifests = {}
        for key in ("tiles_manifest", "features_manifest"):
            if section[key]:
                table = read_manifest(section[key])
                if table is None:
                    log.warning("split.%s %s does not exist; not checked", key, section[key])
                else:
                    manifests[section[key]] = table
        if not manifests:
            raise StoreError(
                "split.require_features is true but no tiles/features manifest exists "
                f"({section['tiles_manifest']!r}, {section['features_manifest']!r}); run `slidemil extract` first, "
                "or set split.require_features=false to split the whole cohort (training then checks the "
                "features with the leakage guard)"
            )
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
    output = Path(section["output"])
    _warn_if_changed(output, splits)
    write_splits(output, splits)
    summary_path = output.with_name(f"{output.stem}_summary.csv")
    write_csv(summary_path, summary)
    log.info("%s: %s, %d fold(s) × %d repeat(s)\n%s", output, config.strategy, splits["n_folds"],
             len(config.seeds), summary.to_string(index=False))
    log.info("per-fold class counts written to %s", summary_path)
    return 0


def _split_config(section: dict[str, Any]) -> SplitConfig:
    from slidemil.splits.strategies import SplitConfig
    from slidemil.splits.validate import LABEL_CONFLICT_POLICIES

    if not isinstance(section["n_folds"], int) or section["n_folds"] < 2:
        raise ParamsError(f"split.n_folds must be an integer ≥ 2, got {section['n_folds']!r}")
    for key in ("val_fraction", "test_fraction"):
        if not 0 <= section[key] < 1:
            raise ParamsError(f"split.{key} must be in [0, 1), got {section[key]!r}")
    if section["label_conflict"] not in LABEL_CONFLICT_POLICIES:
        raise ParamsError(f"split.label_conflict must be one of {', '.join(LABEL_CONFLICT_POLICIES)}, "
                          f"got {section['label_conflict']!r}")
    if section["site_column"] and section["test_fraction"] > 0:
        raise ParamsError("split.site_column (leave-one-site-out) and split.test_fraction cannot be combined")
    seeds = section["seeds"]
    if seeds:
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) or len(set(seeds)) < len(seeds):
            raise ParamsError(f"split.seeds must be distinct integers, got {seeds!r}")
        if section["repeats"] not in (1, len(seeds)):
            raise ParamsError(f"split.repeats={section['repeats']} disagrees with {len(seeds)} split.seeds; "
                              "give one of them")
    else:
        if not isinstance(section["repeats"], int) or section["repeats"] < 1:
            raise ParamsError(f"split.repeats must be an integer ≥ 1, got {section['repeats']!r}")
        seeds = [section["seed"] + i for i in range(section["repeats"])]
    return SplitConfig(n_folds=section["n_folds"], val_fraction=float(section["val_fraction"]), seeds=tuple(seeds),
                       test_fraction=float(section["test_fraction"]), use_sites=bool(section["site_column"]))


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
