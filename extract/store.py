"""The Zarr feature store ``data/features/<encoder_id>.zarr`` (contract: DESIGN.md, "Features").

Layout (Zarr v3)::

    <encoder_id>.zarr/zarr.json                 root attrs: schema_version, encoder_id, weights_sha256, embed_dim
    <encoder_id>.zarr/<slide_id>/features       [N, D] float32 (or float16), dimension_names (patch, feature)
    <encoder_id>.zarr/<slide_id>/coords         [N, 2] int64 level-0 (x, y), dimension_names (patch, xy)
    <encoder_id>.zarr/.locks/<slide_id>.lock    one writer per slide group (O_EXCL lock file)
    <encoder_id>.zarr/.staging/<slide_id>/      a group being written (invisible to readers)

Each array is one shard holding inner chunks of at least 1 MB (uncompressed: pathology features hardly
compress, and decompression would cost more than it saves when loading bags). A slide group is written
under ``.staging`` and renamed into place when complete, so readers never see a partial group; its attrs end
with ``complete: true``. Renames are atomic on a local or POSIX shared file system (the scale-out setting:
every dask worker writes its own slide groups into the same folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from slidemil.core.errors import StoreError

SCHEMA_VERSION = 1
MIN_CHUNK_BYTES = 1 << 20
STALE_LOCK_SECONDS = 900.0
_RESERVED_PREFIXES = (".", "__")


def group_dir(slide_id: str) -> str:
    """Folder name of a slide group: the tiles store's percent-encoding (``extract.tiles.group_name``),
    with a leading ``_`` encoded too, so no slide_id can clash with ``.staging``/``.locks`` or Zarr's ``__``.

    Raises:
        StoreError: empty slide_id.
    """
    from slidemil.extract.tiles import group_name

    if not slide_id:
        raise StoreError("empty slide_id cannot name a feature-store group; fix the cohort table")
    name = group_name(slide_id)
    return "%5F" + name[1:] if name.startswith("_") else name


def inputs_digest(parts: Mapping[str, Any]) -> str:
    """sha256 of the JSON of everything a slide group depends on (encoder id, weights hash, preprocess,
    tiling attrs, coords). A finished group whose digest still matches is not recomputed."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def array_digest(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes (used to tie features to the exact tile coords)."""
    array = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.tobytes())
    return h.hexdigest()


def chunk_rows(n_cols: int, itemsize: int) -> int:
    """Rows per inner chunk so that a chunk holds at least 1 MB (``MIN_CHUNK_BYTES``)."""
    return max(1, -(-MIN_CHUNK_BYTES // max(1, n_cols * itemsize)))


# --------------------------------------------------------------------------------------------- locks


class SlideLock:
    """Exclusive lock on one slide group: ``.locks/<slide_id>.lock`` created with ``O_CREAT | O_EXCL``.

    The file holds the owner's host and PID. A lock is stale (and broken) when its owner is a dead PID on
    this host, or when it has not been refreshed (``refresh``, called once per batch) for
    ``stale_after`` seconds, which covers owners on other hosts.
    """

    def __init__(self, path: Path, stale_after: float = STALE_LOCK_SECONDS) -> None:
        self.path = path
        self.stale_after = stale_after
        self.held = False

    def acquire(self) -> bool:
        """Try once to take the lock (breaking a stale one); return whether it is held now."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._break_if_stale():
                    return False
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, fh)
            self.held = True
            return True
        return False

    def wait(self, poll: float = 0.2, timeout: float | None = None) -> bool:
        """Block until the lock is held (True) or ``timeout`` seconds passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.acquire():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(poll)
        return True

    def refresh(self) -> None:
        """Heartbeat: touch the lock so writers on other hosts do not take it for stale."""
        if self.held:
            os.utime(self.path)

    def release(self) -> None:
        if self.held:
            self.held = False
            self.path.unlink(missing_ok=True)

    def owner(self) -> str:
        info = _read_lock(self.path)
        return f"pid {info.get('pid')} on {info.get('host')}" if info else "another writer"

    def __enter__(self) -> SlideLock:
        if not self.acquire():
            raise StoreError(f"{self.path} is held by {self.owner()}; one writer per slide group")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _break_if_stale(self) -> bool:
        info = _read_lock(self.path)
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True  # released meanwhile: try again
        if info is None and age < 5.0:
            return False  # being written right now
        if not _is_stale(info, age, self.stale_after):
            return False
        # Move the stale file aside under a unique name (atomic), so two writers cannot both break it.
        aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True
        if _read_lock(aside) != info:  # we moved a fresh lock taken meanwhile: put it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _is_stale(info: dict[str, Any] | None, age: float, stale_after: float) -> bool:
    if info and info.get("host") == socket.gethostname():
        try:
            os.kill(int(info["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError, KeyError):
            pass
        else:
            return False
    return age > stale_after


# -------------------------------------------------------------------------------------------- writer


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
            current = _read_attrs(root_meta)
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
        attrs = _group_attrs(self.path / group_dir(slide_id))
        return bool(attrs.get("complete")) and attrs.get("inputs_digest") == digest

    def write_slide(
        self, slide_id: str, features: np.ndarray, coords: np.ndarray, attrs: Mapping[str, Any], lock: SlideLock
    ) -> None:
        """Write one slide group atomically: stage it, set ``complete: true`` last, rename it into place.

        Args:
            features: [N, D] float32/float16.
            coords: [N, 2] int64 level-0 (x, y), row i belongs to features row i.
            attrs: group attrs (tiles attrs + encoder/preprocess attrs + ``inputs_digest``).
            lock: this slide's lock, held by the caller.

        Raises:
            StoreError: lock not held; rows of features and coords differ; wrong shapes.
        """
        import zarr

        name = group_dir(slide_id)
        if not lock.held:
            raise StoreError(f"writing slide group {slide_id!r} of {self.path} without holding its lock")
        if features.ndim != 2 or coords.ndim != 2 or coords.shape[1] != 2:
            raise StoreError(f"slide {slide_id}: features must be [N, D] and coords [N, 2], got "
                             f"{features.shape} and {coords.shape}")
        if features.shape[0] != coords.shape[0]:
            raise StoreError(f"slide {slide_id}: {features.shape[0]} feature rows but {coords.shape[0]} coords")
        staged = self.staging / name
        shutil.rmtree(staged, ignore_errors=True)  # left over by a killed writer (we hold the lock)
        staged.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(staged, mode="w")
        _write_array(group, "features", features, ("patch", "feature"))
        _write_array(group, "coords", coords.astype(np.int64, copy=False), ("patch", "xy"))
        group.attrs.update({**dict(attrs), "slide_id": slide_id, "schema_version": SCHEMA_VERSION,
                            "n_patches": int(len(coords))})
        group.attrs["complete"] = True
        lock.refresh()
        final = self.path / name
        trash = self.staging / f".old-{name}-{uuid.uuid4().hex}"
        if final.exists():
            os.rename(final, trash)
        os.rename(staged, final)
        shutil.rmtree(trash, ignore_errors=True)


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


def _read_attrs(meta_path: Path) -> dict[str, Any]:
    try:
        return json.loads(meta_path.read_text()).get("attributes", {})
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return {}


def _group_attrs(group_path: Path) -> dict[str, Any]:
    return _read_attrs(group_path / "zarr.json")


# -------------------------------------------------------------------------------------------- reader


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
        root = _read_attrs(self.path / "zarr.json")
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
                if entry.is_dir() and not entry.name.startswith(_RESERVED_PREFIXES):
                    attrs = _group_attrs(Path(entry.path))
                    if attrs.get("complete") is True:
                        ids.append(attrs.get("slide_id", unquote(entry.name)))
        return sorted(ids)

    def __contains__(self, slide_id: object) -> bool:
        return isinstance(slide_id, str) and bool(slide_id) and \
            _group_attrs(self.path / group_dir(slide_id)).get("complete") is True

    def __len__(self) -> int:
        return len(self.slide_ids)

    def attrs(self, slide_id: str) -> dict[str, Any]:
        """Group attrs of one slide (tiles attrs, encoder, preprocess, n_patches, dropped_patches, …)."""
        return _group_attrs(self._group(slide_id))

    def load(self, slide_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The bag of one slide: features [N, D] (stored dtype) and coords [N, 2] int64 level-0 (x, y).

        Raises:
            StoreError: no complete group for ``slide_id``.
        """
        group = self._group(slide_id)
        return _read_array(group / "features"), _read_array(group / "coords")

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
        if _group_attrs(group).get("complete") is not True:
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


# The reader below decodes the one uncompressed shard of an array straight from its file: zarr-python 3
# spends ~6 ms on a 10,000 x 512 float32 shard that a single read copies in ~1.5 ms (bench/extract.py),
# which would make bag loading no faster than HDF5. Any other layout falls back to zarr itself.
_NO_CHUNK = 2**64 - 1


def _read_array(array_path: Path) -> np.ndarray:
    meta = json.loads((array_path / "zarr.json").read_text())
    fast = _read_plain_shard(array_path, meta)
    if fast is not None:
        return fast
    import zarr

    return zarr.open_array(array_path, mode="r")[...]


def _read_plain_shard(array_path: Path, meta: dict[str, Any]) -> np.ndarray | None:
    shape = tuple(meta["shape"])
    shard = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
    codecs = meta["codecs"]
    if len(shape) != 2 or len(codecs) != 1 or codecs[0]["name"] != "sharding_indexed":
        return None
    conf = codecs[0]["configuration"]
    inner = tuple(conf["chunk_shape"])
    plain = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if (
        conf["codecs"] != plain
        or conf["index_codecs"] != plain + [{"name": "crc32c"}]
        or conf.get("index_location", "end") != "end"
        or shard[0] < shape[0]
        or shard[1] != shape[1]
        or inner[1] != shape[1]
        or meta.get("chunk_key_encoding", {}).get("configuration", {}).get("separator", "/") != "/"
    ):
        return None
    dtype = np.dtype(meta["data_type"]).newbyteorder("<")
    out = np.full(shape, meta.get("fill_value", 0), dtype=dtype)
    if out.size == 0:
        return out
    n_chunks = shard[0] // inner[0]
    try:
        fh = open(array_path / "c" / "0" / "0", "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return out  # nothing written: all fill value
    with fh:
        fh.seek(-(16 * n_chunks + 4), os.SEEK_END)
        index = np.frombuffer(fh.read(16 * n_chunks), dtype="<u8").reshape(n_chunks, 2)
        row_bytes = shape[1] * dtype.itemsize
        for i, (offset, nbytes) in enumerate(index):
            start = i * inner[0]
            stop = min(start + inner[0], shape[0])
            if offset == _NO_CHUNK or start >= stop:
                continue
            if nbytes != inner[0] * row_bytes:
                return None
            fh.seek(int(offset))
            view = memoryview(out[start:stop]).cast("B")
            if fh.readinto(view) != (stop - start) * row_bytes:
                raise StoreError(f"{array_path}: shard file is truncated; delete this slide group to rebuild")
    return out.astype(dtype.newbyteorder("="), copy=False)
