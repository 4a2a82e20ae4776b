"""Names and sizes of the feature store layout (DESIGN.md "Features")."""

from __future__ import annotations

from slidemil.core.errors import StoreError
from slidemil.extract.store.groups import group_name

SCHEMA_VERSION = 1
MIN_CHUNK_BYTES = 1 << 20
RESERVED_PREFIXES = (".", "__")


def group_dir(slide_id: str) -> str:
    """Folder name of a slide group: the tiles store's percent-encoding (``group_name``), with a leading
    ``_`` encoded too, so no slide_id can clash with ``.staging``/``.locks`` or Zarr's ``__``.

    Raises:
        StoreError: empty slide_id.
    """
    if not slide_id:
        raise StoreError("empty slide_id cannot name a feature-store group; fix the cohort table")
    name = group_name(slide_id)
    return "%5F" + name[1:] if name.startswith("_") else name


def chunk_rows(n_cols: int, itemsize: int) -> int:
    """Rows per inner chunk so that a chunk holds at least 1 MB (``MIN_CHUNK_BYTES``)."""
    return max(1, -(-MIN_CHUNK_BYTES // max(1, n_cols * itemsize)))
