"""The project's hashing helpers: file bytes, canonical JSON, array contents, file fingerprints.

Every digest that decides whether work is redone (tiles ``params_digest``, feature groups
``inputs_digest``), names weights (``weights_sha256``) or tags an MLflow run comes from here, so two
places never hash the same thing differently.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 24) -> str:
    """sha256 hex digest of a file's bytes, read in ``chunk_bytes`` pieces (e.g. a checkpoint's
    ``weights_sha256``, the splits file of a run).

    Raises:
        OSError: the file cannot be read.
    """
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            sha.update(chunk)
    return sha.hexdigest()


def json_sha256(obj: Any, compact: bool = False) -> str:
    """sha256 hex digest of ``obj`` as canonical JSON (sorted keys, non-JSON values as ``str``).

    ``compact`` drops the blanks after ``,`` and ``:``; both forms are in use (MLflow tags hash the
    compact form, store digests the default one) and must stay as they are for existing runs and stores.
    """
    separators = (",", ":") if compact else None
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str, separators=separators).encode()).hexdigest()


def array_sha256(array: np.ndarray) -> str:
    """sha256 hex digest of an array's dtype, shape and bytes (C order), e.g. a slide's coords [N, 2]."""
    array = np.ascontiguousarray(array)
    sha = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    sha.update(array.tobytes())
    return sha.hexdigest()


def file_fingerprint(path: str | os.PathLike, block_bytes: int = 1 << 20) -> str:
    """``<size>:<digest>`` of a file from its size and the sha256 of three ``block_bytes`` blocks (start,
    middle, end), without reading all of it (slides are GBs).

    Changes when the file is replaced or re-exported (a WSI's header, tile offsets and pixel data move), and
    not when it is copied or moved to another disk (a copy's new modification time is not a change), so a
    cohort moved to a cluster resumes instead of re-encoding.

    Raises:
        OSError: the file does not exist or cannot be read.
    """
    size = os.stat(path).st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        for offset in sorted({0, max(0, size // 2 - block_bytes // 2), max(0, size - block_bytes)}):
            handle.seek(offset)
            digest.update(handle.read(block_bytes))
    return f"{size}:{digest.hexdigest()[:32]}"
