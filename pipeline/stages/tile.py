"""Tile: find the tissue on every cohort slide and lay the patch grid on it.

For each slide of the cohort table: open it (OpenSlide, tifffile or Pillow), resolve its level-0 mpp
(cohort `mpp` column first, then the file's metadata), choose the pyramid level for `tile.target_mpp`,
segment the tissue on a streamed overview (~8 µm/px), keep the grid patches with at least
`tile.min_tissue_fraction` tissue, and write:

  <output>/coords.zarr/<slide_id>/   coords int64 [N, 2] (level-0 x, y) + tissue_fraction, attrs
  <output>/manifest.csv              one row per cohort slide: status ok | no_tissue | failed | skipped
                                     (smaller than one patch), reason
  <output>/qc/<slide_id>.png         overview with the tissue contour and the kept patches

A slide's failure is recorded and the cohort goes on. A slide whose tiles exist for the same file and
parameters is not recomputed (--force recomputes). Exit status 1 when no slide is ok
(`tile.fail_if`: 0.5 → when more than half the slides failed; any_failed; all_failed).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from slidemil.core import provenance
from slidemil.core.errors import ParamsError, SlideError
from slidemil.core.params import stage_params
from slidemil.pipeline.preflight import empty_reason, failure_verdict, parse_fail_if

HELP = "find tissue and lay the patch grid on every cohort slide (→ data/tiles/)"

DEFAULTS: dict[str, Any] = {
    "output": "data/tiles",
    "target_mpp": 0.5,  # µm/px of the patches (0.5 ≈ 20x)
    "patch_size": 512,  # px at target_mpp
    "overlap": 0,  # px at target_mpp shared by neighbouring patches
    "min_tissue_fraction": 0.25,  # of a patch's area
    "max_upsample": 0.1,  # a target at most 10 % finer than the scan
    "level_tolerance": 0.05,  # a level up to 5 % coarser than the target counts as the target
    "mpp_range": [0.05, 50.0],  # plausible level-0 µm/px from metadata
    "memory_budget_mb": 1024,  # largest single read
    "qc_size": 1024,  # longer side of the QC image (px)
    # exit 1 when more than this fraction of slides failed | all_failed | any_failed | never; None → 0.5
    # (None since the params checker types a key by its default, and this one is a number or a word)
    "fail_if": None,
    "tissue": {
        "mask_mpp": 8.0,
        "min_mask_side": 512,
        "method": "auto",  # auto | saturation | brightness
        "otsu": True,
        "min_threshold": 10,
        "max_threshold": 40,
        "dark_background": 60,
        "median_blur_um": 40.0,
        "close_um": 32.0,
        "min_area_mm2": 0.01,
        "max_hole_mm2": 0.05,
        "pen_filter": True,
        "pen_min_saturation": 90,
        "ink_min_saturation": 110,
        "black_max_value": 50,
        "pen_min_area_mm2": 0.05,
    },
}

#: Parameters that do not change a slide's tiles (left out of the resume digest).
_NOT_IN_DIGEST = ("output", "fail_if", "memory_budget_mb", "qc_size")

log = logging.getLogger("slidemil.tile")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="recompute slides whose tiles are up to date")


def run(params: dict[str, Any], args: argparse.Namespace) -> int:
    """Tile every cohort slide (resuming finished ones); returns 1 when ``tile.fail_if`` is met, else 0."""
    from tqdm import tqdm

    from slidemil.core.atomic import write_csv
    from slidemil.extract.tiles import MANIFEST, MANIFEST_COLUMNS, open_tiles
    from slidemil.splits.cohort import load_cohort

    cfg = validate(stage_params(params, "tile", DEFAULTS))
    if not params.get("cohort"):
        raise ParamsError("params.yaml has no `cohort:` (path to the cohort table)")
    cohort = load_cohort(params["cohort"])
    root = Path(cfg["output"])
    root.mkdir(parents=True, exist_ok=True)
    provenance.begin(root / MANIFEST, "tile")  # an interrupted run leaves a manifest marked stale
    store = open_tiles(root)
    rows: list[dict[str, Any]] = []
    progress = tqdm(cohort.itertuples(index=False), total=len(cohort), desc="tile", unit="slide")
    for slide in progress:
        progress.set_postfix_str(slide.slide_id)
        rows.append(tile_one(slide.slide_id, Path(slide.path), slide.mpp, cfg, root, store,
                             force=getattr(args, "force", False)))
        write_csv(root / MANIFEST, _frame(rows, MANIFEST_COLUMNS))  # keep finished rows if we crash
    provenance.record(root / MANIFEST, "tile", {
        params["cohort"]: provenance.file_digest(params["cohort"]),
        "tile params": provenance.value_digest({k: v for k, v in stage_params(params, "tile", DEFAULTS).items()
                                                if k not in _NOT_IN_DIGEST}),
    })
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "no_tissue", "failed", "skipped")}
    n_patches = sum(r["n_patches"] for r in rows if r["status"] == "ok")
    fails, verdict = failure_verdict(counts, cfg["fail_if"], "tile.fail_if")
    log.log(logging.ERROR if fails else logging.INFO, "tile: %s; %d patches → %s", verdict, n_patches, root)
    return 1 if fails or (rows and not counts["ok"]) else 0


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check the ``tile`` section's values; returns it with ``tissue`` as TissueParams.

    Raises:
        ParamsError: naming the key and the allowed values.
    """
    from slidemil.extract.tissue import TissueParams

    checks = [
        ("target_mpp", cfg["target_mpp"] > 0, "a positive µm/px, e.g. 0.5"),
        ("patch_size", isinstance(cfg["patch_size"], int) and cfg["patch_size"] >= 8, "an integer ≥ 8 (px)"),
        ("overlap", isinstance(cfg["overlap"], int) and 0 <= cfg["overlap"] < cfg["patch_size"],
         "an integer in [0, patch_size)"),
        ("min_tissue_fraction", 0 <= cfg["min_tissue_fraction"] <= 1, "a fraction in [0, 1]"),
        ("max_upsample", cfg["max_upsample"] >= 0, "≥ 0"),
        ("level_tolerance", 0 <= cfg["level_tolerance"] < 1, "in [0, 1)"),
        ("mpp_range", len(cfg["mpp_range"]) == 2 and 0 < cfg["mpp_range"][0] < cfg["mpp_range"][1],
         "[low, high] µm/px"),
        ("memory_budget_mb", cfg["memory_budget_mb"] > 0, "a positive number of MB"),
        ("qc_size", cfg["qc_size"] >= 64, "≥ 64 px"),
    ]
    for key, ok, allowed in checks:
        if not ok:
            raise ParamsError(f"params key 'tile.{key}' = {cfg[key]!r} must be {allowed}")
    cfg = {**cfg, "fail_if": parse_fail_if(cfg["fail_if"], "tile.fail_if")}
    try:
        tissue = TissueParams.from_dict(cfg["tissue"])
    except (TypeError, ValueError) as exc:
        raise ParamsError(f"params section 'tile.tissue': {exc}") from exc
    return {**cfg, "tissue": tissue}


def tile_one(slide_id: str, path: Path, mpp_override: float, cfg: dict[str, Any], root: Path, store,
             force: bool = False) -> dict[str, Any]:
    """Tile one slide; never raises for a slide-level problem (returns its manifest row)."""
    from slidemil.extract.tiles import params_digest, slide_fingerprint

    start = time.perf_counter()
    row: dict[str, Any] = {"slide_id": slide_id, "status": "failed", "reason": "", "mpp": math.nan,
                           "mpp_source": "", "level": math.nan, "n_patches": 0, "tissue_mm2": math.nan}
    override = None if mpp_override is None or math.isnan(mpp_override) else float(mpp_override)
    try:
        if not path.is_file():
            raise SlideError(f"{path}: slide file not found; check the `path` column of the cohort table")
        fingerprint = slide_fingerprint(path)
        digest = params_digest({**{k: v for k, v in cfg.items() if k not in _NOT_IN_DIGEST and k != "tissue"},
                                "tissue": asdict(cfg["tissue"]), "mpp_override": override})
        if not force and store.is_current(slide_id, fingerprint, digest):
            attrs = store.attrs(slide_id)
            row.update(status=attrs["status"], reason=f"up to date (resumed): {attrs['reason']}", mpp=attrs["mpp"],
                       mpp_source=attrs["mpp_source"], level=attrs["level"], n_patches=attrs["n_patches"],
                       tissue_mm2=attrs["tissue_mm2"])
        else:
            row.update(_tile_slide(slide_id, path, override, cfg, root, fingerprint, digest))
    except SlideError as exc:
        row["reason"] = str(exc)
        log.warning("slide %s failed: %s", slide_id, exc)
    except Exception as exc:  # noqa: BLE001 — per-slide isolation: a bug on one slide must not stop the cohort
        row["reason"] = f"internal error ({type(exc).__name__}: {exc}); please report it with the log"
        log.exception("slide %s: unexpected error", slide_id)
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row


def _tile_slide(slide_id: str, path: Path, override: float | None, cfg: dict[str, Any], root: Path,
                fingerprint: str, digest: str) -> dict[str, Any]:
    from slidemil.core.atomic import atomic_path
    from slidemil.extract.grid import grid_coords, select_patches, tissue_fractions
    from slidemil.extract.levels import choose_level
    from slidemil.extract.qc import draw_qc, encode_png
    from slidemil.extract.slide import open_slide, read_patch, resize
    from slidemil.extract.tiles import QC_DIR, group_name, write_slide_tiles
    from slidemil.extract.tissue import mask_area_mm2, mask_downsample, tissue_mask

    tissue = cfg["tissue"]
    with open_slide(path, override, cfg["memory_budget_mb"], tuple(cfg["mpp_range"])) as slide:
        choice = choose_level(slide.level_downsamples, slide.mpp, cfg["target_mpp"], cfg["patch_size"],
                              cfg["level_tolerance"], cfg["max_upsample"])
        width, height = slide.dimensions
        mask_ds = mask_downsample(slide.dimensions, slide.mpp, tissue)
        overview = slide.read_overview(min(mask_ds, max(1.0, max(width, height) / cfg["qc_size"])))
        mask_image = overview.image
        if overview.downsample < mask_ds:
            mask_image = resize(overview.image, math.ceil(width / mask_ds), math.ceil(height / mask_ds))
        segmentation = tissue_mask(mask_image, slide.mpp * mask_ds, tissue)
        stride = max(1, round((cfg["patch_size"] - cfg["overlap"]) * choice.target_downsample))
        candidates = grid_coords(width, height, choice.patch_size_level0, stride)
        fractions = tissue_fractions(candidates, choice.patch_size_level0, segmentation.mask, mask_ds)
        coords, fractions = select_patches(candidates, fractions, cfg["min_tissue_fraction"])
        tissue_mm2 = mask_area_mm2(segmentation.mask, slide.mpp * mask_ds)
        notes = [f"level {choice.level} ({choice.level_mpp:.3g} µm/px), read {choice.read_size} px → "
                 f"{choice.patch_size} px; {len(coords)} of {len(candidates)} grid patches have ≥ "
                 f"{cfg['min_tissue_fraction']:.0%} tissue ({segmentation.method} threshold {segmentation.threshold:.0f})"]
        if slide.dropped_levels:
            notes.append(f"reader levels {slide.dropped_levels} disagree in colour with level 0 and were not used")
        if overview.unreadable:
            notes.append(f"{len(overview.unreadable)} unreadable region(s) treated as background, level-0 "
                         f"(x, y, w, h): {overview.unreadable[:5]}")
        if segmentation.pen_fraction > 0.001:
            notes.append(f"pen ink removed from {segmentation.pen_fraction:.1%} of the overview")
        if len(coords):  # a level that cannot be decoded fails here, not first at extract
            read_patch(slide, int(coords[0][0]), int(coords[0][1]), choice.level, choice.read_size, choice.patch_size)
            status = "ok"
        elif not len(candidates):
            status = "skipped"
            notes.insert(0, f"the slide ({width}x{height} px) is smaller than one patch "
                            f"({choice.patch_size_level0} level-0 px); lower tile.patch_size or tile.target_mpp")
        else:
            status = "no_tissue"
            notes.insert(0, empty_reason(tissue_mm2, cfg, segmentation.method, segmentation.threshold))
        reason = "; ".join(notes)
        attrs = {
            "status": status, "reason": reason, "mpp": slide.mpp, "mpp_source": slide.mpp_source,
            "target_mpp": cfg["target_mpp"], "patch_size": choice.patch_size,
            "patch_size_level0": choice.patch_size_level0, "level": choice.level,
            "level_downsample": choice.level_downsample, "read_size": choice.read_size,
            "overlap": cfg["overlap"], "stride_level0": stride, "tissue_mm2": tissue_mm2,
            "tissue": {**asdict(tissue), "method_used": segmentation.method,
                       "threshold": segmentation.threshold, "mask_mpp_used": slide.mpp * mask_ds},
            "slide_path": str(path.resolve()), "slide_fingerprint": fingerprint, "params_digest": digest,
            "backend": slide.backend, "dimensions": list(slide.dimensions),
        }
        write_slide_tiles(root, slide_id, coords, fractions, attrs)
        qc = draw_qc(overview.image, overview.downsample, segmentation.mask, coords, choice.patch_size_level0,
                     overview.unreadable)
        with atomic_path(root / QC_DIR / f"{group_name(slide_id)}.png", suffix=".png") as tmp:
            tmp.write_bytes(encode_png(qc))
    return {"status": status, "reason": reason, "mpp": slide.mpp, "mpp_source": slide.mpp_source,
            "level": choice.level, "n_patches": int(len(coords)), "tissue_mm2": round(tissue_mm2, 4)}


def _frame(rows: list[dict[str, Any]], columns: list[str]):
    import pandas as pd

    frame = pd.DataFrame(rows, columns=columns)
    for column in ("level", "n_patches"):  # integers with blanks for failed slides, not floats
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame
