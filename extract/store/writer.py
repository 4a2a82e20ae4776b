"""Writing slide groups of a feature store (each group staged and renamed into place under its lock)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from slidemil.core.errors import StoreError
from slidemil.extract.store.groups import read_attrs, write_group
from slidemil.extract.store.layout import SCHEMA_VERSION, chunk_rows, group_dir
from slidemil.extract.store.locks import STALE_LOCK_SECONDS, SlideLock


class FeatureStoreWriter:
    """Writes slide groups into a feature store; creates the store (root attrs) if needed.

    Raises:
        StoreError: the folder holds a store of another encoder or of an unknown schema version.
    """

    def __init__(self, path: str | os.PathLike, encoder_id: str, weights_sha256: str, embed_dim: int) -> None:
        import zarr

        self.path = Path(path)
        root_meta = self.path / "zarr.json"
        wanted = {
            "schema_version": SCHEMA_VERSION,
            "encoder_id": encoder_id,
            "weights_sha256": weights_sha256,
            "embed_dim": int(embed_dim),
        }
        if root_meta.exists():
            current = read_attrs(self.path)
            if current.get("schema_version") != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has feature-store schema_version {current.get('schema_version')!r}, this "
                    f"slidemil writes {SCHEMA_VERSION}; delete the folder (or choose another output) to rebuild"
                )
            if current.get("encoder_id") != encoder_id:
                raise StoreError(
                    f"{self.path} holds features of encoder {current.get('encoder_id')!r}, not {encoder_id!r}; "
                    "use one store per encoder"
                )
            if current != {**current, **wanted}:  # weights changed: slides recompute (their digest differs)
                zarr.open_group(self.path, mode="r+").attrs.update(wanted)
        else:
            zarr.open_group(self.path, mode="a", attributes=wanted)
        self.staging = self.path / ".staging"
        self.locks = self.path / ".locks"

    def lock(self, slide_id: str, stale_after: float = STALE_LOCK_SECONDS) -> SlideLock:
        """The lock of one slide group (not yet acquired)."""
        return SlideLock(self.locks / f"{group_dir(slide_id)}.lock", stale_after)

    def is_up_to_date(self, slide_id: str, digest: str) -> bool:
        """True when a complete group exists whose ``inputs_digest`` equals ``digest``."""
        attrs = read_attrs(self.path / group_dir(slide_id))
        return bool(attrs.get("complete")) and attrs.get("inputs_digest") == digest

    def write_slide(
        self, slide_id: str, features: np.ndarray, coords: np.ndarray, attrs: Mapping[str, Any], lock: SlideLock
    ) -> None:
        """Write one slide group atomically (``groups.write_group``: staged, ``complete: true``, renamed).

        Args:
            features: [N, D] float32/float16.
            coords: [N, 2] int64 level-0 (x, y), row i belongs to features row i.
            attrs: group attrs (tiles attrs + encoder/preprocess attrs + ``inputs_digest``).
            lock: this slide's lock, held by the caller.

        Raises:
            StoreError: lock not held; rows of features and coords differ; wrong shapes.
        """
        name = group_dir(slide_id)
        if not lock.held:
            raise StoreError(f"writing slide group {slide_id!r} of {self.path} without holding its lock")
        if features.ndim != 2 or coords.ndim != 2 or coords.shape[1] != 2:
            raise StoreError(f"slide {slide_id}: features must be [N, D] and coords [N, 2], got "
                             f"{features.shape} and {coords.shape}")
        if features.shape[0] != coords.shape[0]:
            raise StoreError(f"slide {slide_id}: {features.shape[0]} feature rows but {coords.shape[0]} coords")
        all_attrs = {**dict(attrs), "slide_id": slide_id, "schema_version": SCHEMA_VERSION,
                     "n_patches": int(len(coords))}

        def fill(group: Any) -> None:
            _write_array(group, "features", features, ("patch", "feature"))
            _write_array(group, "coords", coords.astype(np.int64, copy=False), ("patch", "xy"))
            lock.refresh()

        write_group(self.path / name, self.staging / name, all_attrs, fill)


def _write_array(group: Any, name: str, data: np.ndarray, dims: tuple[str, str]) -> None:
    data = np.ascontiguousarray(data)
    rows = chunk_rows(data.shape[1], data.dtype.itemsize)
    shard_rows = max(rows, -(-data.shape[0] // rows) * rows)  # one shard holds the whole array
    array = group.create_array(
        name,
        shape=data.shape,
        dtype=data.dtype,
        chunks=(rows, data.shape[1]),
        shards=(shard_rows, data.shape[1]),
        compressors=None,
        dimension_names=dims,
    )
    if data.size:
        array[...] = data
