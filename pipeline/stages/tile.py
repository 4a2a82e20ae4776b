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
parameters is not recomputed (--force recomputes). Exit status 1 when no slide is ok, or as `tile.fail_if`
says (default 0.5: when more than half of the slides failed; or any_failed, all_failed, never).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path
from typing import Any

from slidemil.core import provenance
from slidemil.core.errors import ParamsError, SlideError
from slidemil.core.params import read_section
from slidemil.extract.sections import TileSection
from slidemil.pipeline.preflight import failure_verdict

HELP = "find tissue and lay the patch grid on every cohort slide (→ data/tiles/)"
SECTION = TileSection  # the `tile:` section of params.yaml (validated up front by the CLI)

log = logging.getLogger("slidemil.tile")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="recompute slides whose tiles are up to date")


def run(params: dict[str, Any], args: argparse.Namespace) -> int:
    """Tile every cohort slide (resuming finished ones); returns 1 when ``tile.fail_if`` is met, else 0."""
    from tqdm import tqdm

    from slidemil.core.atomic import write_csv
    from slidemil.extract.tiles import MANIFEST, MANIFEST_COLUMNS, open_tiles
    from slidemil.splits.cohort import load_cohort

    cfg = read_section(params, "tile", TileSection)
    if not params.get("cohort"):
        raise ParamsError("params.yaml has no `cohort:` (path to the cohort table)")
    cohort = load_cohort(params["cohort"])
    root = Path(cfg.output)
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
        "tile params": cfg.digest(None),
    })
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "no_tissue", "failed", "skipped")}
    n_patches = sum(r["n_patches"] for r in rows if r["status"] == "ok")
    fails, verdict = failure_verdict(counts, cfg.fail_if, "tile.fail_if")
    log.log(logging.ERROR if fails else logging.INFO, "tile: %s; %d patches → %s", verdict, n_patches, root)
    return 1 if fails or (rows and not counts["ok"]) else 0


def tile_one(slide_id: str, path: Path, mpp_override: float, cfg: TileSection, root: Path, store,
             force: bool = False) -> dict[str, Any]:
    """Tile one slide and store its group and QC image; never raises for a slide-level problem (returns
    its manifest row)."""
    from slidemil.core.atomic import atomic_path
    from slidemil.core.hashing import file_fingerprint
    from slidemil.extract.tiles import QC_DIR, group_name, write_slide_tiles
    from slidemil.extract.tiling import tile_slide

    start = time.perf_counter()
    row: dict[str, Any] = {"slide_id": slide_id, "status": "failed", "reason": "", "mpp": math.nan,
                           "mpp_source": "", "level": math.nan, "n_patches": 0, "tissue_mm2": math.nan,
                           "tissue_method": ""}
    override = None if mpp_override is None or math.isnan(mpp_override) else float(mpp_override)
    try:
        if not path.is_file():
            raise SlideError(f"{path}: slide file not found; check the `path` column of the cohort table")
        if not force and store.is_current(slide_id, file_fingerprint(path), cfg.digest(override)):
            attrs = store.attrs(slide_id)
            row.update(status=attrs["status"], reason=f"up to date (resumed): {attrs['reason']}", mpp=attrs["mpp"],
                       mpp_source=attrs["mpp_source"], level=attrs["level"], n_patches=attrs["n_patches"],
                       tissue_mm2=attrs["tissue_mm2"], tissue_method=attrs["tissue"].get("method_used", ""))
        else:
            result = tile_slide(path, cfg, override)
            write_slide_tiles(root, slide_id, result.coords, result.tissue_fraction, result.attrs)
            with atomic_path(root / QC_DIR / f"{group_name(slide_id)}.png", suffix=".png") as tmp:
                tmp.write_bytes(result.qc_png)
            row.update(result.row())
    except SlideError as exc:
        row["reason"] = str(exc)
        log.warning("slide %s failed: %s", slide_id, exc)
    except Exception as exc:  # noqa: BLE001 — per-slide isolation: a bug on one slide must not stop the cohort
        row["reason"] = f"internal error ({type(exc).__name__}: {exc}); please report it with the log"
        log.exception("slide %s: unexpected error", slide_id)
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row


def _frame(rows: list[dict[str, Any]], columns: list[str]):
    import pandas as pd

    frame = pd.DataFrame(rows, columns=columns)
    for column in ("level", "n_patches"):  # integers with blanks for failed slides, not floats
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame
