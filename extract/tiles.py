"""The tiles store (``data/tiles/``): patch coordinates per slide in Zarr, a manifest, QC images.

Layout (DESIGN.md "Tiles"): ``coords.zarr/<group>/coords`` int64 [N, 2] (x, y level-0 px) and
``tissue_fraction`` float32 [N]; group attrs ``slide_id``, ``mpp``, ``mpp_source``, ``target_mpp``,
``patch_size``, ``patch_size_level0``, ``level``, ``level_downsample``, ``read_size``, ``overlap``,
``tissue``, ``tissue_outline`` (the mask's outer boundaries, level-0 [[x, y], …] per region), ``schema_version``, ``slide_path``, ``slide_fingerprint``, ``params_digest``, ``status``,
``n_patches`` and last ``complete: true``. ``<group>`` is the slide_id, percent-encoded where it has
characters a folder name cannot hold. Each slide group is written in a temporary folder and renamed
into place (``store.groups``, shared with the feature store), so a reader never sees half a group.
``manifest.csv`` has one row per cohort slide.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slidemil.core.errors import StoreError
from slidemil.extract.store.groups import group_name, write_group

SCHEMA_VERSION = 1
COORDS_STORE = "coords.zarr"
MANIFEST = "manifest.csv"
QC_DIR = "qc"
MANIFEST_COLUMNS = ["slide_id", "status", "reason", "mpp", "mpp_source", "level", "n_patches", "tissue_mm2",
                    "tissue_method", "seconds"]
STATUSES = ("ok", "no_tissue", "failed", "skipped")
RESUMED = "up to date (resumed): "  # prefix of the manifest reason of a slide whose tiles were kept


def write_slide_tiles(root: str | Path, slide_id: str, coords: np.ndarray, tissue_fraction: np.ndarray,
                      attrs: dict[str, Any]) -> None:
    """Write (or replace) one slide's group atomically (``store.groups.write_group``: built under
    ``<root>/.staging``, renamed into ``coords.zarr``).

    Args:
        root: the tiles folder (``data/tiles``).
        coords: int64 [N, 2] (x, y) level-0 px; N may be 0 (a ``no_tissue`` slide).
        tissue_fraction: float32 [N].
        attrs: group attributes (``slide_id``, ``schema_version``, ``complete`` are set here).

    Raises:
        ValueError: coords and tissue_fraction differ in length.
    """
    import zarr

    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    tissue_fraction = np.asarray(tissue_fraction, dtype=np.float32).reshape(-1)
    if len(coords) != len(tissue_fraction):
        raise ValueError(f"{len(coords)} coords but {len(tissue_fraction)} tissue fractions")
    store = Path(root) / COORDS_STORE
    zarr.open_group(store, mode="a")
    n = max(1, len(coords))

    def fill(group: Any) -> None:
        group.create_array("coords", data=coords, chunks=(n, 2), dimension_names=("patch", "xy"))
        group.create_array("tissue_fraction", data=tissue_fraction, chunks=(n,), dimension_names=("patch",))

    name = group_name(slide_id)
    # Tiling takes no lock: a unique staging folder keeps two runs from building into the same one.
    staged = Path(root) / ".staging" / f"{name}.{uuid.uuid4().hex}"
    write_group(store / name, staged, {**attrs, "slide_id": slide_id, "n_patches": len(coords),
                                       "schema_version": SCHEMA_VERSION}, fill)


class TilesStore:
    """Read access to a tiles folder (see the module docstring); open with :func:`open_tiles`."""

    def __init__(self, root: Path) -> None:
        import zarr

        self.root = root
        self._store = root / COORDS_STORE
        self._attrs: dict[str, dict[str, Any]] = {}
        if self._store.exists():
            for name, group in zarr.open_group(self._store, mode="r").groups():
                attrs = dict(group.attrs)
                if not attrs.get("complete"):
                    continue  # a crashed write; the next tile run redoes it
                if attrs.get("schema_version") != SCHEMA_VERSION:
                    raise StoreError(f"{self._store / name}: tiles schema_version {attrs.get('schema_version')} "
                                     f"is not {SCHEMA_VERSION}; rerun `slidemil tile` to rebuild")
                self._attrs[attrs["slide_id"]] = attrs

    @property
    def slide_ids(self) -> list[str]:
        """IDs of slides with status ``ok`` (at least one patch), sorted; when ``manifest.csv`` exists only
        those it lists as ``ok`` (a group left from an earlier run of a slide that now fails is ignored)."""
        ids = {s for s, a in self._attrs.items() if a.get("status") == "ok" and a.get("n_patches", 0) > 0}
        if (self.root / MANIFEST).is_file():
            manifest = self.manifest()
            ids &= set(manifest.loc[manifest["status"] == "ok", "slide_id"])
        return sorted(ids)

    def attrs(self, slide_id: str) -> dict[str, Any]:
        """Group attributes of ``slide_id`` (raises StoreError when the slide has no complete group)."""
        try:
            return dict(self._attrs[slide_id])
        except KeyError:
            raise StoreError(f"{self._store}: no tiles for slide {slide_id!r}; check manifest.csv "
                             "for its status or rerun `slidemil tile`") from None

    def load(self, slide_id: str) -> tuple[np.ndarray, np.ndarray]:
        """``(coords int64 [N, 2] level-0 (x, y), tissue_fraction float32 [N])`` of ``slide_id``."""
        import zarr

        self.attrs(slide_id)
        group = zarr.open_group(self._store / group_name(slide_id), mode="r")
        return np.asarray(group["coords"][:], dtype=np.int64), np.asarray(group["tissue_fraction"][:], np.float32)

    def is_current(self, slide_id: str, path: str | Path, digest: str) -> bool:
        """True when ``slide_id`` has a complete group for the same file (the same ``path``, which extraction
        reads, and content fingerprint) and parameters ``digest`` (resume). The file is read for its
        fingerprint only when everything else matches."""
        from slidemil.core.hashing import file_fingerprint

        attrs = self._attrs.get(slide_id)
        return (bool(attrs) and attrs.get("params_digest") == digest
                and attrs.get("slide_path") == str(Path(path).resolve())
                and attrs.get("slide_fingerprint") == file_fingerprint(path))

    def manifest(self) -> pd.DataFrame:
        """``manifest.csv`` as a DataFrame (``slide_id`` as text); raises StoreError when it is missing."""
        path = self.root / MANIFEST
        if not path.is_file():
            raise StoreError(f"{path} not found; run `slidemil tile` first")
        return pd.read_csv(path, dtype={"slide_id": str, "reason": str, "mpp_source": str},
                           keep_default_na=False, na_values={"mpp": [""], "level": [""], "tissue_mm2": [""]})


def open_tiles(root: str | Path) -> TilesStore:
    """Open the tiles folder ``root`` (``data/tiles``) for reading.

    Raises:
        StoreError: the folder does not exist, or a group has an unknown ``schema_version``.
    """
    root = Path(root)
    if not root.is_dir():
        raise StoreError(f"tiles folder {root} not found; run `slidemil tile` first")
    return TilesStore(root)
