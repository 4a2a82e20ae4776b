"""Tile: find the tissue on every cohort slide and lay the patch grid on it.

For each slide of the cohort table: open it (OpenSlide, tifffile or Pillow), resolve its level-0 mpp
(cohort `mpp` column first, then the file's metadata), choose the pyramid level for `tile.target_mpp`,
segment the tissue on a streamed overview (~8 µm/px), keep the grid patches with at least
`tile.min_tissue_fraction` tissue, and write:

  <output>/coords.zarr/<slide_id>/   coords int64 [N, 2] (level-0 x, y) + tissue_fraction, attrs
  <output>/manifest.csv              one row per cohort slide: status ok | no_tissue | failed | skipped
                                     (smaller than one patch), reason
  <output>/qc/<slide_id>.png         overview with the tissue contour and the kept patches

Slides are tiled in `tile.workers` processes (auto: one per core). A slide's failure is recorded and the
cohort goes on (also when a slide crashes its process). A slide whose tiles exist for the same file and
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
from slidemil.core.errors import CohortError, ParamsError
from slidemil.core.params import read_section
from slidemil.extract.sections import TileSection
from slidemil.pipeline.preflight import failure_verdict

HELP = "find tissue and lay the patch grid on every cohort slide (→ data/tiles/)"
SECTION = TileSection  # the `tile:` section of params.yaml (validated up front by the CLI)
# Tiling imports neither torch nor scikit-learn: the head and probe names and options (whose checks import
# them, ~1-3 s per process) are checked from `extract` on, which imports torch anyway, before its long work.
CHECKS_PLUGINS = False

log = logging.getLogger("slidemil.tile")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="recompute slides whose tiles are up to date")


def run(params: dict[str, Any], args: argparse.Namespace) -> int:
    """Tile every cohort slide (resuming finished ones) in ``tile.workers`` processes; returns 1 when
    ``tile.fail_if`` is met, else 0."""
    from tqdm import tqdm

    from slidemil.extract.tiles import MANIFEST, open_tiles
    from slidemil.extract.tiling_pool import SlideJob, resolve_workers, tile_slides
    from slidemil.splits.cohort import load_cohort

    cfg = read_section(params, "tile", TileSection)
    if not params.get("cohort"):
        raise ParamsError("params.yaml has no `cohort:` (path to the cohort table)")
    cohort = load_cohort(params["cohort"])
    if not len(cohort):
        raise CohortError(f"{params['cohort']} lists no slides (only a header row): add one row per slide")
    root = Path(cfg.output)
    root.mkdir(parents=True, exist_ok=True)
    provenance.begin(root / MANIFEST, "tile")  # an interrupted run leaves a manifest marked stale
    store = open_tiles(root)
    rows: dict[str, dict[str, Any]] = {}
    jobs: list[SlideJob] = []
    for slide in cohort.itertuples(index=False):
        job = SlideJob.of(slide.slide_id, slide.path, slide.mpp)
        resumed = None if getattr(args, "force", False) else resumed_row(job, cfg, store)
        if resumed is None:
            jobs.append(job)
        else:
            rows[job.slide_id] = resumed
    workers = resolve_workers(cfg.workers, len(jobs))
    if rows:
        log.info("tile: %d of %d slides up to date (resumed); tiling %d in %d process(es)", len(rows), len(cohort),
                 len(jobs), workers)
    manifest = _ManifestWriter(root / MANIFEST, list(cohort["slide_id"]))
    progress = tqdm(total=len(cohort), initial=len(rows), desc="tile", unit="slide")
    try:
        for outcome in tile_slides(jobs, cfg, workers):
            rows[outcome.job.slide_id] = store_outcome(root, outcome)
            progress.set_postfix_str(outcome.job.slide_id, refresh=False)
            progress.update()
            manifest.write(rows, at_most_every=_MANIFEST_EVERY_S)
    finally:
        progress.close()
        manifest.write(rows)  # finished rows are kept if we crash or are interrupted
    provenance.record(root / MANIFEST, "tile", {
        params["cohort"]: provenance.file_digest(params["cohort"]),
        "tile params": cfg.digest(None),
    })
    done = list(rows.values())
    counts = {s: sum(r["status"] == s for r in done) for s in ("ok", "no_tissue", "failed", "skipped")}
    n_patches = sum(r["n_patches"] for r in done if r["status"] == "ok")
    fails, verdict = failure_verdict(counts, cfg.fail_if, "tile.fail_if")
    log.log(logging.ERROR if fails else logging.INFO, "tile: %s; %d patches → %s", verdict, n_patches, root)
    if not fails and not counts["ok"]:
        log.error("tile: no slide has patches to encode; see the reason of each in %s", root / MANIFEST)
    return 1 if fails or not counts["ok"] else 0


#: the manifest is rewritten at most this often while slides finish (and always at the end): rewriting it
#: after every slide is quadratic in the cohort; the tiles store, not the manifest, is what a re-run resumes from
_MANIFEST_EVERY_S = 5.0


def _empty_row(slide_id: str) -> dict[str, Any]:
    return {"slide_id": slide_id, "status": "failed", "reason": "", "mpp": math.nan, "mpp_source": "",
            "level": math.nan, "n_patches": 0, "tissue_mm2": math.nan, "tissue_method": "", "seconds": 0.0}


def resumed_row(job, cfg: TileSection, store) -> dict[str, Any] | None:
    """The manifest row of a slide whose tiles are current (same file fingerprint and tile params digest),
    from its stored attrs; None when it must be tiled (or its file is missing: tiling then says so)."""
    from slidemil.extract.tiles import RESUMED

    if not job.path.is_file() or not store.is_current(job.slide_id, job.path, cfg.digest(job.mpp_override)):
        return None
    attrs = store.attrs(job.slide_id)
    row = _empty_row(job.slide_id)
    row.update(status=attrs["status"], reason=RESUMED + attrs["reason"], mpp=attrs["mpp"],
               mpp_source=attrs["mpp_source"], level=attrs["level"], n_patches=attrs["n_patches"],
               tissue_mm2=attrs["tissue_mm2"], tissue_method=attrs["tissue"].get("method_used", ""))
    return row


def store_outcome(root: Path, outcome) -> dict[str, Any]:
    """Write a tiled slide's group and QC image (``outcome``: a ``TileOutcome``) and return its manifest row;
    a failed slide only gets its row. Never raises for a slide-level problem."""
    from slidemil.core.atomic import atomic_path
    from slidemil.extract.tiles import QC_DIR, group_name, write_slide_tiles

    slide_id, result = outcome.job.slide_id, outcome.result
    row = _empty_row(slide_id)
    row.update(reason=outcome.reason, seconds=outcome.seconds)
    if result is None:
        log.warning("slide %s failed: %s", slide_id, outcome.reason)
        return row
    try:
        write_slide_tiles(root, slide_id, result.coords, result.tissue_fraction, result.attrs)
        with atomic_path(root / QC_DIR / f"{group_name(slide_id)}.png", suffix=".png") as tmp:
            tmp.write_bytes(result.qc_png)
    except OSError as exc:
        row["reason"] = f"could not write its tiles under {root}: {exc}"
        log.warning("slide %s failed: %s", slide_id, row["reason"])
        return row
    except Exception as exc:  # noqa: BLE001 — per-slide isolation: a bug on one slide must not stop the cohort
        row["reason"] = f"internal error ({type(exc).__name__}: {exc}); please report it with the log"
        log.exception("slide %s: unexpected error", slide_id)
        return row
    row.update(result.row())
    return row


class _ManifestWriter:
    """Writes ``manifest.csv`` (atomically) with the rows finished so far, in cohort order."""

    def __init__(self, path: Path, order: list[str]) -> None:
        self.path, self.order, self.last = path, order, -math.inf

    def write(self, rows: dict[str, dict[str, Any]], at_most_every: float = 0.0) -> None:
        """Rewrite the manifest, unless it was written less than ``at_most_every`` seconds ago."""
        from slidemil.core.atomic import write_csv
        from slidemil.extract.tiles import MANIFEST_COLUMNS

        if time.monotonic() - self.last < at_most_every:
            return
        write_csv(self.path, _frame([rows[s] for s in self.order if s in rows], MANIFEST_COLUMNS))
        self.last = time.monotonic()


def _frame(rows: list[dict[str, Any]], columns: list[str]):
    import pandas as pd

    frame = pd.DataFrame(rows, columns=columns)
    for column in ("level", "n_patches"):  # integers with blanks for failed slides, not floats
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame
