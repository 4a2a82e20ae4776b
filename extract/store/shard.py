"""Reading a 2-D Zarr array, with a fast path for one uncompressed shard."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from slidemil.core.errors import StoreError

# The reader below decodes the one uncompressed shard of an array straight from its file: zarr-python 3
# spends ~6 ms on a 10,000 x 512 float32 shard that a single read copies in ~1.5 ms (bench/extract.py),
# which would make bag loading no faster than HDF5. Any other layout falls back to zarr itself.
_NO_CHUNK = 2**64 - 1


def read_array(array_path: Path) -> np.ndarray:
    """The whole 2-D array at ``array_path`` [N, D] (a Zarr v3 array folder).

    Raises:
        StoreError: the shard file is truncated.
    """
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
    fill = meta.get("fill_value", 0)
    out = np.empty(shape, dtype=dtype)  # every row is read or filled below (np.full would touch each page twice)
    if out.size == 0:
        return out
    n_chunks = shard[0] // inner[0]
    try:
        fh = open(array_path / "c" / "0" / "0", "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        out.fill(fill)
        return out  # nothing written: all fill value
    with fh:
        fh.seek(-(16 * n_chunks + 4), os.SEEK_END)
        index = np.frombuffer(fh.read(16 * n_chunks), dtype="<u8").reshape(n_chunks, 2)
        row_bytes = shape[1] * dtype.itemsize
        for i, (offset, nbytes) in enumerate(index):
            start = i * inner[0]
            stop = min(start + inner[0], shape[0])
            if start >= stop:
                continue
            if offset == _NO_CHUNK:
                out[start:stop] = fill
                continue
            if nbytes != inner[0] * row_bytes:
                return None
            fh.seek(int(offset))
            view = memoryview(out[start:stop]).cast("B")
            if fh.readinto(view) != (stop - start) * row_bytes:
                raise StoreError(f"{array_path}: shard file is truncated; delete this slide group to rebuild")
    return out.astype(dtype.newbyteorder("="), copy=False)
