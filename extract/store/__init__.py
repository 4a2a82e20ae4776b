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

Modules: ``layout`` (names, schema version, chunk sizes), ``groups`` (the staged group write both stores
use), ``locks`` (one writer per slide group), ``writer``, ``reader``, ``shard`` (fast bag decoding).
"""

from slidemil.extract.store.layout import SCHEMA_VERSION, chunk_rows, group_dir
from slidemil.extract.store.locks import STALE_LOCK_SECONDS, SlideLock
from slidemil.extract.store.reader import FeatureStore, open_features, store_path
from slidemil.extract.store.writer import FeatureStoreWriter

__all__ = [
    "SCHEMA_VERSION", "STALE_LOCK_SECONDS", "FeatureStore", "FeatureStoreWriter", "SlideLock", "chunk_rows",
    "group_dir", "open_features", "store_path",
]
