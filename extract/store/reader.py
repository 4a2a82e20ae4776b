"""Reading a feature store: complete slide groups only, bags as NumPy or dask arrays."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from slidemil.core.errors import StoreError
from slidemil.extract.store.groups import read_attrs
from slidemil.extract.store.layout import RESERVED_PREFIXES, SCHEMA_VERSION, group_dir
from slidemil.extract.store.shard import read_array


class FeatureStore:
    """Read access to a feature store: complete slide groups only.

    Attributes:
        path: the ``<encoder_id>.zarr`` folder.
        encoder_id, weights_sha256, embed_dim: store-level attrs.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise StoreError(f"{self.path} is not a feature store (no zarr.json); run `slidemil extract` first")
        root = read_attrs(self.path)
        if root.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: feature-store schema_version {root.get('schema_version')!r} is not "
                f"{SCHEMA_VERSION}; rebuild it with `slidemil extract` (delete the folder first)"
            )
        self.encoder_id: str = root["encoder_id"]
        self.weights_sha256: str = root["weights_sha256"]
        self.embed_dim: int = int(root.get("embed_dim", 0))

    @property
    def slide_ids(self) -> list[str]:
        """Sorted slide_ids of complete groups (a group without ``complete: true`` does not exist)."""
        ids = []
        with os.scandir(self.path) as entries:
            for entry in entries:
                if entry.is_dir() and not entry.name.startswith(RESERVED_PREFIXES):
                    attrs = read_attrs(Path(entry.path))
                    if attrs.get("complete") is True:
                        ids.append(attrs.get("slide_id", unquote(entry.name)))
        return sorted(ids)

    def __contains__(self, slide_id: object) -> bool:
        return isinstance(slide_id, str) and bool(slide_id) and \
            read_attrs(self.path / group_dir(slide_id)).get("complete") is True

    def __len__(self) -> int:
        return len(self.slide_ids)

    def attrs(self, slide_id: str) -> dict[str, Any]:
        """Group attrs of one slide (tiles attrs, encoder, preprocess, n_patches, dropped_patches, …)."""
        return read_attrs(self._group(slide_id))

    def load(self, slide_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The bag of one slide: features [N, D] (stored dtype) and coords [N, 2] int64 level-0 (x, y).

        Raises:
            StoreError: no complete group for ``slide_id``.
        """
        group = self._group(slide_id)
        return read_array(group / "features"), read_array(group / "coords")

    def load_features(self, slide_id: str) -> np.ndarray:
        """The features [N, D] (stored dtype) of one slide without its coords: two files fewer to open than
        :meth:`load` (the probes, zero-shot and deploy need no coords; on a cold page cache each file costs).

        Raises:
            StoreError: no complete group for ``slide_id``.
        """
        return read_array(self._group(slide_id) / "features")

    def to_dask(self, slide_id: str) -> tuple[Any, Any]:
        """Lazy (features [N, D], coords [N, 2]) dask arrays of one slide, one dask chunk per Zarr chunk."""
        import dask.array as da
        import zarr

        group = self._group(slide_id)
        return (
            da.from_zarr(zarr.open_array(group / "features", mode="r")),
            da.from_zarr(zarr.open_array(group / "coords", mode="r")),
        )

    def _group(self, slide_id: str) -> Path:
        group = self.path / group_dir(slide_id)
        if read_attrs(group).get("complete") is not True:
            raise StoreError(
                f"slide {slide_id!r} has no complete feature group in {self.path}; run `slidemil extract` "
                "(see data/features/manifest.csv for its status)"
            )
        return group


def store_path(output_dir: str | Path, encoder: str) -> Path:
    """The store of ``encoder`` under ``output_dir``: ``<output_dir>/<encoder id>.zarr``.

    ``encoder`` is a registry name or an encoder's ``.id``; both give the same folder
    (``timm:resnet18`` and ``timm-resnet18`` → ``timm-resnet18.zarr``).
    """
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in encoder.replace(":", "-"))
    return Path(output_dir) / f"{safe}.zarr"


def open_features(path: str | os.PathLike) -> FeatureStore:
    """Open a feature store for reading (see ``FeatureStore``).

    Raises:
        StoreError: not a store, or of an unknown schema version.
    """
    return FeatureStore(path)
