"""Encode the patches of every tiled slide into the feature store data/features/<encoder_id>.zarr.

Reads the `extract:` section of params.yaml and the tiles store (data/tiles), writes one group per slide
(features [N, D], coords [N, 2] in tile order) and data/features/manifest.csv (one row per cohort slide:
status, reason, patches, read/encode seconds, patches/s).

Resumable: a slide group becomes visible only when complete; a finished group is not recomputed unless the
encoder (id, weights, preprocessing), the tiling or the dtype changed, or --force is given. Several runs
(or dask workers) may share one store: each slide group has one writer at a time.

A slide fails (status and reason in the manifest, one WARNING line each) when, e.g., none of its patches
can be read any more; the cohort goes on. Run before `slidemil tile`, it stops with a message saying so.

The default encoder is conch_v1. Its weights come from the extract.checkpoint param, else env CONCH_CHECKPOINT;
without either, synthetic weights are used (features are then meaningless: a WARNING is logged and the
store records weights_sha256 "synthetic:1").

Scale-out (extract.scheduler): `none` runs in this process; `local` starts a dask LocalCluster of
extract.n_workers processes (one per GPU on CUDA); `tcp://host:8786` sends one task per slide to that
scheduler (e.g. a dask-jobqueue SLURM cluster), whose workers must see the same files.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from slidemil.core import provenance
from slidemil.core.errors import StoreError
from slidemil.core.params import read_section
from slidemil.extract.sections import ExtractSection
from slidemil.pipeline.preflight import check_slides_unchanged, failure_verdict

HELP = "tiles → patch features (CONCH by default) in data/features/<encoder>.zarr"
SECTION = ExtractSection  # the `extract:` section of params.yaml (validated up front by the CLI)

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list-encoders", action="store_true", help="print the registered encoders and exit")
    parser.add_argument("--force", action="store_true", help="recompute slides whose features are up to date")


def run(params: dict[str, Any], args: argparse.Namespace) -> int:
    """Extract features for every slide of the tiles manifest; returns the exit code (see ``fail_if``)."""
    section = read_section(params, "extract", ExtractSection)
    if getattr(args, "list_encoders", False):
        from slidemil.extract.encoders import list_encoders

        print("\n".join(list_encoders()))
        return 0
    stain = _stain_norm(section)
    if not (Path(section.tiles) / "manifest.csv").is_file():  # checked before the encoder's weights load
        from slidemil.pipeline.preflight import upstream_hint

        raise StoreError(f"no tiles at {section.tiles}: run `slidemil tile` first"
                         + upstream_hint(params, "extract.tiles", section.tiles, "tile.output"))

    import pandas as pd
    from tqdm import tqdm

    from slidemil.core.atomic import write_csv
    from slidemil.extract.distributed import get_encoder, resolve_device, run_jobs
    from slidemil.extract.extraction import (
        MANIFEST_COLUMNS,
        ExtractionConfig,
        SlideJob,
        default_batch_size,
        default_num_workers,
    )
    from slidemil.extract.store import store_path as features_store_path
    from slidemil.extract.tiles import open_tiles

    device = resolve_device(section.device)
    config = ExtractionConfig(
        encoder=section.encoder,
        checkpoint=_checkpoint(section),
        device=section.device if section.scheduler != "none" else device,
        precision=section.precision,
        batch_size=_auto_int(section.batch_size, default_batch_size(device)),
        num_workers=_auto_int(section.num_workers, default_num_workers(device)),
        dtype=section.dtype,
        tiles=section.tiles,
        store="",
        force=bool(getattr(args, "force", False)),
        stain_norm=stain,
    )
    # Build the encoder here once: it validates the name/weights/precision before any work and names the store.
    encoder = get_encoder(replace(config, device=device))
    store_path = features_store_path(section.output, encoder.id)
    config = replace(config, store=str(store_path))

    tiles_manifest = Path(section.tiles) / "manifest.csv"
    provenance.check_chain(tiles_manifest, "tile")
    provenance.begin(Path(section.output) / "manifest.csv", "extract")  # stale until this run finishes
    manifest = open_tiles(section.tiles).manifest()
    check_slides_unchanged(open_tiles(section.tiles), manifest.loc[manifest["status"] == "ok", "slide_id"].tolist())
    jobs = [SlideJob(str(r.slide_id), str(r.status), "" if pd.isna(r.reason) else str(r.reason))
            for r in manifest.itertuples()]
    log.info("extract: %d slides, encoder %s (%s, weights %s) on %s, batch %d, %d reader threads → %s",
             len(jobs), encoder.id, encoder.precision, encoder.weights_sha256, device, config.batch_size,
             config.num_workers, store_path)

    t0 = time.perf_counter()
    n_tiles = int(pd.to_numeric(manifest.get("n_patches", pd.Series(dtype=float)), errors="coerce").fillna(0).sum())
    with tqdm(total=len(jobs), desc="slides", unit="slide", position=0) as slides_bar, \
         tqdm(total=n_tiles, desc="patches", unit="patch", position=1, smoothing=0.1) as patch_bar:

        def on_result(row: dict[str, Any]) -> None:
            slides_bar.update(1)
            if row["status"] == "failed":
                log.warning("slide %s failed: %s", row["slide_id"], row["reason"])
            elif row["reason"].startswith("up to date"):
                patch_bar.total = max(0, patch_bar.total - int(row.get("n_patches") or 0))

        rows = run_jobs(jobs, config, section.scheduler, section.n_workers, on_result, patch_bar.update)
    frame = pd.DataFrame(rows).reindex(columns=MANIFEST_COLUMNS)
    write_csv(Path(section.output) / "manifest.csv", frame)
    provenance.record(Path(section.output) / "manifest.csv", "extract", {
        str(tiles_manifest): provenance.file_digest(tiles_manifest), "store": str(store_path.resolve()),
        "encoder": f"{encoder.id}:{encoder.weights_sha256}:{config.dtype}",
    })

    seconds = time.perf_counter() - t0
    counts = frame["status"].value_counts().to_dict()
    computed = frame["reason"].fillna("").str.startswith("computed")
    n_patches = int(frame.loc[computed, "n_patches"].fillna(0).sum())
    log.info(
        "extract: %d slides (%s); %d computed, %d up to date; %d patches in %.1f s (%.1f patches/s) → %s",
        len(frame), ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), int(computed.sum()),
        int(frame["reason"].fillna("").str.startswith("up to date").sum()), n_patches, seconds,
        n_patches / seconds if seconds else 0.0, store_path,
    )
    fails, verdict = failure_verdict(counts, section.fail_if, "extract.fail_if")
    log.log(logging.ERROR if fails else logging.INFO, "extract: %s", verdict)
    return 1 if fails else 0


def _auto_int(value: int | str, default: int) -> int:
    return default if value == "auto" else int(value)


def _checkpoint(section: ExtractSection) -> str | None:
    """The weights to load: the param, else env CONCH_CHECKPOINT (conch_v1), else synthetic with a WARNING."""
    checkpoint = section.checkpoint
    if checkpoint or section.encoder != "conch_v1":
        return checkpoint or None
    if os.environ.get("CONCH_CHECKPOINT"):
        return os.environ["CONCH_CHECKPOINT"]
    log.warning(
        "!!! extract.checkpoint is empty and CONCH_CHECKPOINT is not set: using SYNTHETIC conch_v1 weights "
        "(weights_sha256 synthetic:1). Features are NOT meaningful; set CONCH_CHECKPOINT=/path/to/"
        "pytorch_model.bin for real CONCH features. !!!"
    )
    return "synthetic:1"



def _stain_norm(section: ExtractSection) -> tuple[str, str]:
    """``extract.stain_norm`` → (method, absolute reference path or "")."""
    stain = section.stain_norm
    return stain.method, str(Path(stain.reference).resolve()) if stain.reference else ""
