"""Heatmaps of any slide of any feature store (training or deploy), from the stored features alone.

For each slide (`--slides`, heatmap.slides, or every slide of the store) every fold model of the head
(train.models, or an MLflow URI in heatmap.model_uri) scores each patch: attention as a percentile within
the slide and, for heads with an instance classifier (CLAM, DSMIL, mean/max MLP), a score per class,
averaged over the fold models. Nothing is re-tiled or re-encoded. Writes under `<heatmap.output>/<head>/`:

  <slide>.png               attention percentiles over the thumbnail: colour bar, scale bar, prediction + label
  <slide>.score_<class>.png instance scores of each class (heads with an instance classifier)
  <slide>.patches.png       the top-k and bottom-k patches read at full resolution (contact sheet)
  <slide>.geojson           patch squares in level-0 px with the scores as measurements: QuPath detections
                            (File › Import objects); <slide>.tissue.geojson with heatmap.tissue_geojson
  index.csv                 one row per slide: prediction, label, n_patches, files, problem
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from pydantic import Field, StrictBool

from slidemil.core.params import Section, read_section

HELP = "heatmaps, contact sheets and QuPath GeoJSON of slides from stored features → heatmaps/<head>/"

log = logging.getLogger(__name__)


class HeatmapSection(Section):
    """The ``heatmap:`` params section."""

    output: str = Field("heatmaps", description="folder of <head>/<slide>.png, .patches.png, .geojson")
    store: str = Field("", description="feature store; empty: the training store (train.features)")
    models: str = Field("", description="folder of <head>/fold-<k>.pt; empty: train.models")
    model_uri: str = Field("", description="MLflow URI of the head's models (runs:/<run_id>) instead of the folder")
    slides: list[str] = Field(default_factory=list, description="slides to draw; empty: every slide of the store")
    top_k: int = Field(8, ge=1, description="patches in each row of the contact sheet")
    thumbnail_size: int = Field(1024, ge=128, description="longer side of the thumbnail under the heatmap (px)")
    tissue_geojson: StrictBool = Field(False, description="also write the tissue outline as QuPath annotations")
    device: str = Field("cpu", description="cpu | cuda | cuda:<i>")


SECTION = HeatmapSection


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--head", required=True, help="the MIL head whose fold models score the patches")
    parser.add_argument("--slides", nargs="+", default=None, metavar="ID", help="slides to draw (default: all)")
    parser.add_argument("--store", default=None, help="feature store (default: heatmap.store, else train.features)")
    parser.add_argument("--cohort", default=None, help="cohort table whose labels go in the titles (default: the "
                        "params' cohort and deploy.cohort)")


def run(params: dict[str, Any], args: argparse.Namespace) -> int:
    """Draw the heatmaps; returns 0, or 1 when a requested slide is not in the store."""
    import pandas as pd

    from slidemil.core.atomic import write_csv
    from slidemil.extract.store import open_features
    from slidemil.pipeline.data import features_path
    from slidemil.pipeline.ensemble import load_fold_models
    from slidemil.pipeline.provenance import check_features
    from slidemil.pipeline.stages.deploy import common_provenance, train_section, validate_heads

    section = read_section(params, "heatmap", HeatmapSection)
    train = train_section(params)
    head = args.head
    validate_heads([head])
    store = open_features(getattr(args, "store", None) or section.store or features_path(train.features, params))
    classes = _classes(params)
    models = load_fold_models(head, section.model_uri or section.models or train.models, classes)
    provenance = common_provenance({head: models})
    if provenance:  # scores of features the models were not trained on would mean nothing
        check_features(provenance, store)
    wanted = list(getattr(args, "slides", None) or section.slides or store.slide_ids)
    missing = [s for s in wanted if s not in store]
    for sid in missing:
        log.error("heatmap: slide %s has no complete group in %s", sid, store.path)
    labels = _labels(params, getattr(args, "cohort", None))
    out = Path(section.output) / head
    rows = []
    for sid in (s for s in wanted if s not in missing):
        rows.append(draw_slide(sid, store, models, labels.get(sid, ""), section, out))
        log.info("heatmap %s: %s (%s)", sid, rows[-1]["pred"], ", ".join(rows[-1]["files"].split(";")))
    if rows:
        write_csv(out / "index.csv", pd.DataFrame(rows))
    return 1 if missing else 0


def draw_slide(slide_id: str, store, fold_models, label: str, section: HeatmapSection, out: Path) -> dict[str, Any]:
    """Score and draw one slide; returns its index row (files written, prediction, problem)."""
    import json

    import matplotlib.pyplot as plt
    import numpy as np

    from slidemil.core.atomic import atomic_path, write_text
    from slidemil.extract.tiles import group_name
    from slidemil.pipeline.geojson import patch_collection
    from slidemil.pipeline.heatmaps import contact_sheet, heatmap_figure, patch_scores, patch_side, read_slide

    features, coords = store.load(slide_id)
    attrs = store.attrs(slide_id)
    classes = fold_models[0].classes
    scores = patch_scores([m.model for m in fold_models], features, section.device)
    pred = classes[int(np.argmax(scores.proba))]
    ranking = scores.attention if scores.attention is not None else (
        scores.class_scores[:, int(np.argmax(scores.proba))] if scores.class_scores is not None else None)
    k = min(section.top_k, max(1, len(coords) // 2))  # small slides: as many lowest as highest
    order = np.argsort(-ranking, kind="stable") if ranking is not None else np.arange(len(coords))
    top, bottom = order[:k], order[::-1][: min(k, len(coords) - k)]  # no patch in both rows
    pixels = read_slide(attrs, coords, [*top, *bottom], section.thumbnail_size)
    side = patch_side(attrs, coords)
    name = group_name(slide_id)
    title = (f"{slide_id}: {len(fold_models)} fold models predict {pred} (p = {scores.proba.max():.2f}); "
             f"label {label or 'unknown'}")
    maps = {}
    if scores.attention is not None:
        maps[f"{name}.png"] = (scores.attention, "attention percentile (mean over folds)")
    if scores.class_scores is not None:
        for j, c in enumerate(classes):
            maps[f"{name}.score_{c}.png"] = (scores.class_scores[:, j], f"patch score of {c}")
    files = []
    for file, (values, what) in maps.items():
        fig = heatmap_figure(coords, values, side, pixels.thumbnail, pixels.scale, attrs.get("mpp"), title, what)
        with atomic_path(out / file, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        files.append(file)
    if pixels.patches and ranking is not None:
        caption = [f"{ranking[i]:.2f} ({coords[i, 0]},{coords[i, 1]})" for i in order]
        sheet = contact_sheet(pixels.patches[:k], pixels.patches[k:], caption[:k], caption[::-1][: len(bottom)],
                              title=f"{slide_id}: {'attention percentile' if scores.attention is not None else 'score'}")
        from PIL import Image

        with atomic_path(out / f"{name}.patches.png", suffix=".png") as tmp:
            Image.fromarray(sheet).save(tmp, format="PNG")
        files.append(f"{name}.patches.png")
    measurements: dict[str, np.ndarray] = {}
    if scores.attention is not None:
        measurements["attention percentile"] = scores.attention
    if scores.class_scores is not None:
        measurements.update({f"score {c}": scores.class_scores[:, j] for j, c in enumerate(classes)})
    per_patch_class = ([classes[j] for j in scores.class_scores.argmax(axis=1)]
                       if scores.class_scores is not None and scores.class_scores.shape[1] else None)
    collection = patch_collection(coords, side, measurements, attrs.get("dimensions"), per_patch_class, classes)
    write_text(out / f"{name}.geojson", json.dumps(collection, separators=(",", ":")))
    files.append(f"{name}.geojson")
    if section.tissue_geojson:
        from slidemil.pipeline.geojson import tissue_collection
        from slidemil.pipeline.tissue_outline import tissue_polygons

        polygons = tissue_polygons(attrs)
        if polygons is None:
            log.warning("slide %s: its tiles hold no tissue outline (tiled before slidemil 0.3); no %s.tissue.geojson "
                        "(re-run `slidemil tile --force` and `slidemil extract` to add it)", slide_id, name)
        else:
            write_text(out / f"{name}.tissue.geojson", json.dumps(tissue_collection(polygons)))
            files.append(f"{name}.tissue.geojson")
    return {"slide_id": slide_id, "n_patches": len(coords), "pred": pred, "label": label,
            **{f"prob_{c}": float(p) for c, p in zip(classes, scores.proba, strict=True)},
            "files": ";".join(files), "problem": pixels.problem}


def _classes(params: dict[str, Any]) -> list[str]:
    """Class names of the training splits (needed to name MLflow models' outputs); [] without a splits file."""
    from slidemil.pipeline.stages.deploy import train_section
    from slidemil.splits.io import load_splits

    path = Path(train_section(params).splits)
    return list(load_splits(path)["classes"]) if path.is_file() else []


def _labels(params: dict[str, Any], cohort: str | None = None) -> dict[str, str]:
    """slide_id → label from the cohort tables (params cohort, deploy.cohort, then ``cohort``), where present."""
    from slidemil.core.errors import SlidemilError
    from slidemil.splits.cohort import load_cohort
    from slidemil.splits.task import load_task

    try:
        column = load_task(params).label
    except SlidemilError:
        return {}
    labels: dict[str, str] = {}
    for table in (params.get("cohort"), (params.get("deploy") or {}).get("cohort"), cohort):
        if not table or not Path(table).is_file():
            continue
        cohort = load_cohort(table)
        if column in cohort.columns:
            labels.update({str(s): str(v) for s, v in zip(cohort["slide_id"], cohort[column], strict=True) if str(v)})
    return labels
