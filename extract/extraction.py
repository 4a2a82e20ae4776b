"""Per-slide feature extraction: encode a slide's patches, and the slide task the stage and dask run.

``encode_slide`` is the compute step (batches in, features out). ``run_slide`` is one task of the
``extract`` stage — the unit that runs in-process or on a dask worker: it checks whether the slide's group
is up to date, takes the slide's lock, reads and encodes its patches and writes the group atomically, and
returns the slide's manifest row. Nothing here logs; progress goes through callbacks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slidemil.core.errors import SlideError, SlidemilError
from slidemil.core.hashing import array_sha256, json_sha256
from slidemil.extract.patches import PatchBatch, PatchGrid, iter_batches
from slidemil.extract.store import FeatureStoreWriter

DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass
class EncodedSlide:
    """Features of one slide's readable patches.

    Attributes:
        features: [N, D] float32, row i from patch ``kept[i]``.
        kept: int64 [N] rows of the tile coords that were encoded (all but the dropped ones, in order).
        dropped: (row, reason) of patches whose pixels could not be read.
        seconds_read: reader-thread seconds; seconds_encode: device seconds (preprocess + encoder).
    """

    features: np.ndarray
    kept: np.ndarray
    dropped: list[tuple[int, str]] = field(default_factory=list)
    seconds_read: float = 0.0
    seconds_encode: float = 0.0


def encode_slide(
    batches: Iterable[PatchBatch],
    encoder: Any,
    embed_dim: int,
    on_batch: Callable[[int], None] | None = None,
) -> EncodedSlide:
    """Encode uint8 patch batches: ``encoder.prepare_batch`` (resize + normalise on the device), then the
    encoder under its precision policy, one batch ahead of the host's checks and copies. Unreadable patches
    are dropped from the result.

    Args:
        batches: ``PatchBatch`` es of one slide (pixels [B, P, P, 3] uint8).
        encoder: an ``extract.encoders`` Encoder (``prepare_batch``, ``__call__`` → [B, D]).
        embed_dim: D, the shape of the result when nothing is encoded.
        on_batch: called with the batch size after each batch (progress, lock heartbeat).

    Raises:
        SlideError: the encoder produced non-finite values (naming the patch rows).
    """
    features, kept, dropped = [], [], []
    seconds_read = seconds_encode = 0.0

    def finish(batch: PatchBatch, out: torch.Tensor) -> None:
        nonlocal seconds_read
        finite = torch.isfinite(out).all(dim=1).cpu().numpy()  # waits for this batch's results
        bad = batch.indices[batch.ok & ~finite]
        if len(bad):
            raise SlideError(f"encoder produced non-finite features for {len(bad)} patches (tile rows "
                             f"{bad[:10].tolist()}); check the weights and the precision setting")
        features.append(out[torch.from_numpy(batch.ok).to(out.device)].cpu().numpy())
        seconds_read += batch.seconds_read
        kept.append(batch.indices[batch.ok])
        dropped.extend(batch.errors)
        if on_batch is not None:
            on_batch(len(batch.indices))

    # One batch in flight: batch i+1's copy and forward are queued before waiting for batch i's results, so
    # a GPU never idles while the host checks, copies back and fetches the next batch (no effect on CPU).
    pending: tuple[PatchBatch, torch.Tensor] | None = None
    for batch in batches:
        t0 = time.perf_counter()
        out = encoder(encoder.prepare_batch(batch.pixels))  # (B, D) float32 on the device, asynchronous
        if pending is not None:
            finish(*pending)
        pending = (batch, out)
        seconds_encode += time.perf_counter() - t0
    if pending is not None:
        t0 = time.perf_counter()
        finish(*pending)
        seconds_encode += time.perf_counter() - t0
    if not features:
        return EncodedSlide(np.zeros((0, embed_dim), np.float32), np.zeros(0, np.int64))
    return EncodedSlide(np.concatenate(features), np.concatenate(kept), dropped, seconds_read, seconds_encode)


# --------------------------------------------------------------------------------------- slide task


@dataclass(frozen=True)
class ExtractionConfig:
    """What every slide task needs (picklable, sent to dask workers).

    ``device``/``precision`` are resolved per worker; ``batch_size``/``num_workers`` are ints here.
    """

    encoder: str
    checkpoint: str | None
    device: str
    precision: str
    batch_size: int
    num_workers: int
    dtype: str
    tiles: str
    store: str
    prefetch: int = 2
    fast_reader: bool = True
    force: bool = False  # recompute slides whose group is up to date
    stain_norm: tuple[str, str] = ("none", "")  # extract.stain_norm (method, reference path)


@dataclass(frozen=True)
class SlideJob:
    """One slide of the tiles manifest: its id, tiling status and reason."""

    slide_id: str
    tile_status: str
    tile_reason: str = ""


MANIFEST_COLUMNS = [
    "slide_id", "status", "reason", "mpp", "mpp_source", "level", "n_patches", "tissue_mm2", "seconds",
    "seconds_read", "seconds_encode", "patches_per_second",
]
BUSY = "busy"  # status of a task that found the slide locked by another writer (retried with wait=True)


def run_slide(
    job: SlideJob,
    config: ExtractionConfig,
    encoder: Any,
    wait_for_lock: bool = False,
    on_patches: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Extract one slide into the store unless its group is up to date (or ``config.force``); return its
    manifest row.

    Status ``ok`` (computed, or up to date: reason says which; a few unreadable patches are dropped and
    listed in the reason), ``no_tissue`` (no patches: written as (0, D) arrays), ``failed`` (reason; e.g.
    every patch unreadable, nothing written), ``skipped`` (tiling did not succeed) or ``busy`` (locked by
    another writer and ``wait_for_lock`` is False).
    """
    from slidemil.extract.tiles import open_tiles

    t_start = time.perf_counter()
    row: dict[str, Any] = {"slide_id": job.slide_id, "status": "skipped", "reason": "", "n_patches": 0}
    if job.tile_status not in ("ok", "no_tissue"):
        from slidemil.extract.tiles import RESUMED

        row["reason"] = f"tiling status {job.tile_status}: {job.tile_reason.removeprefix(RESUMED)}".rstrip(": ")
        return row
    try:
        coords, tile_attrs = _load_tiles(open_tiles(config.tiles), job.slide_id)
        row.update({k: tile_attrs.get(k) for k in ("mpp", "mpp_source", "level", "tissue_mm2")})
        desc = encoder.describe()
        digest = json_sha256({
            "encoder": {k: desc.get(k) for k in ("encoder_id", "embed_dim", "weights_sha256", "preprocess")},
            "dtype": config.dtype,
            "tiles": {k: tile_attrs.get(k) for k in ("params_digest", "slide_fingerprint", "level",
                                                     "read_size", "patch_size", "patch_size_level0")},
            "coords": array_sha256(coords),
        })
        writer = FeatureStoreWriter(config.store, desc["encoder_id"], desc["weights_sha256"], desc["embed_dim"])
        if not config.force and writer.is_up_to_date(job.slide_id, digest):
            return _up_to_date(row, writer, job.slide_id, t_start, tile_attrs)
        lock = writer.lock(job.slide_id)
        if not (lock.wait() if wait_for_lock else lock.acquire()):
            return {**row, "status": BUSY, "reason": f"locked by {lock.owner()}"}
        try:
            if not config.force and writer.is_up_to_date(job.slide_id, digest):  # finished by another writer
                return _up_to_date(row, writer, job.slide_id, t_start, tile_attrs)
            result = _extract(coords, tile_attrs, config, encoder, lock, on_patches)
            if len(coords) and not len(result.features):
                raise SlideError(f"all {len(coords)} patches unreadable: {result.dropped[0][1]}")
            status = "ok" if len(result.features) else "no_tissue"
            attrs = {
                **tile_attrs, **desc,
                "dtype": config.dtype,
                "status": status,
                "dropped_patches": [{"row": int(i), "x": int(coords[i][0]), "y": int(coords[i][1]), "reason": r}
                                    for i, r in result.dropped],
                "inputs_digest": digest,
                "created": time.time(),
            }
            features = result.features.astype(DTYPES[config.dtype], copy=False)
            writer.write_slide(job.slide_id, features, coords[result.kept], attrs, lock)
        finally:
            lock.release()
    except SlidemilError as exc:
        return {**row, "status": "failed", "reason": str(exc), "seconds": round(time.perf_counter() - t_start, 3)}
    seconds = time.perf_counter() - t_start
    reason = "computed"
    if result.dropped:
        reason += f"; dropped {len(result.dropped)} unreadable patches (rows {[i for i, _ in result.dropped][:10]})"
    return {
        **row, "status": status, "reason": reason, "n_patches": len(result.features),
        "seconds": round(seconds, 3), "seconds_read": round(result.seconds_read, 3),
        "seconds_encode": round(result.seconds_encode, 3),
        "patches_per_second": round(len(result.features) / seconds, 2) if seconds > 0 else None,
    }


def _load_tiles(tiles: Any, slide_id: str) -> tuple[np.ndarray, dict[str, Any]]:
    """coords [N, 2] int64 and attrs of one slide's tiles; a slide without a tiles group has no patches."""
    try:
        attrs = dict(tiles.attrs(slide_id))
        coords, _ = tiles.load(slide_id)
    except (SlidemilError, KeyError, FileNotFoundError):
        return np.zeros((0, 2), np.int64), {"slide_id": slide_id}
    return np.asarray(coords, dtype=np.int64).reshape(-1, 2), attrs


def _extract(coords: np.ndarray, tile_attrs: dict[str, Any], config: ExtractionConfig, encoder: Any,
             lock: Any, on_patches: Callable[[int], None] | None) -> EncodedSlide:
    embed_dim = int(encoder.embed_dim)
    if len(coords) == 0:
        return EncodedSlide(np.zeros((0, embed_dim), np.float32), np.zeros(0, np.int64))
    missing = [k for k in ("slide_path", "level", "read_size", "patch_size") if tile_attrs.get(k) is None]
    if missing:
        raise SlideError(f"tiles group of {tile_attrs.get('slide_id')} lacks {missing}; rerun `slidemil tile`")
    override = tile_attrs.get("mpp") if tile_attrs.get("mpp_source") == "override" else None
    grid = PatchGrid(Path(tile_attrs["slide_path"]), coords, int(tile_attrs["level"]),
                     int(tile_attrs["read_size"]), int(tile_attrs["patch_size"]), override, config.fast_reader)
    pin = torch.device(encoder.device).type == "cuda"

    def on_batch(n: int) -> None:
        lock.refresh()
        if on_patches is not None:
            on_patches(n)

    batches = iter_batches(grid, config.batch_size, config.num_workers, config.prefetch, pin_memory=pin)
    return encode_slide(batches, encoder, embed_dim, on_batch)


def _up_to_date(row: dict[str, Any], writer: FeatureStoreWriter, slide_id: str, t_start: float,
                tile_attrs: dict[str, Any]) -> dict[str, Any]:
    """The row of a slide whose features are current; a slide file moved since (same content fingerprint, new
    ``slide_path`` in its tiles) gets the new path in its feature attrs, where heatmaps read the slide."""
    from slidemil.extract.store import group_dir, open_features
    from slidemil.extract.store.groups import update_attrs

    attrs = open_features(writer.path).attrs(slide_id)
    if tile_attrs.get("slide_path") and attrs.get("slide_path") != tile_attrs["slide_path"]:
        update_attrs(writer.path / group_dir(slide_id), {"slide_path": tile_attrs["slide_path"]})
    return {**row, "status": attrs.get("status", "ok"), "reason": "up to date (not recomputed)",
            "n_patches": attrs.get("n_patches", 0), "seconds": round(time.perf_counter() - t_start, 3)}


def default_num_workers(device: str) -> int:
    """Reader threads for ``num_workers: auto``: all cores but one on CUDA, 2 on CPU (the encoder needs them)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, min(32, cores - 1)) if device.startswith("cuda") else min(2, cores)


def default_batch_size(device: str) -> int:
    """Patches per batch for ``batch_size: auto``: 256 on CUDA, 16 on CPU."""
    return 256 if device.startswith("cuda") else 16
