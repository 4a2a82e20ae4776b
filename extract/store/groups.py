"""The one mechanism both Zarr stores (tiles ``coords.zarr``, features ``<encoder_id>.zarr``) write a slide
group with: build it under a staging folder, attrs ending with ``complete: true`` written once, rename it
into place. A reader never sees half a group; a group without ``complete: true`` does not exist.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote


def group_name(slide_id: str) -> str:
    """Folder-safe Zarr group name for ``slide_id`` (percent-encoding; a leading dot is encoded)."""
    name = quote(slide_id, safe="-_.~")
    return "%2E" + name[1:] if name.startswith(".") else name


def write_group(final: Path, staged: Path, attrs: Mapping[str, Any], fill: Callable[[Any], None]) -> None:
    """Write the Zarr group ``final`` atomically (replacing an existing one).

    The group is created at ``staged`` (a folder on the same file system, removed first: a leftover of a
    killed writer) with all its attrs plus ``complete: true`` in one metadata write, ``fill(group)``
    creates its arrays, then it is renamed to ``final``; the group it replaces is moved aside and deleted.
    Renames are atomic on a local or POSIX shared file system.

    Raises:
        OSError: the folders cannot be written.
    """
    import zarr

    shutil.rmtree(staged, ignore_errors=True)
    staged.parent.mkdir(parents=True, exist_ok=True)
    try:
        group = zarr.open_group(staged, mode="w", attributes={**attrs, "complete": True})
        fill(group)
        trash = staged.parent / f".old-{final.name}-{uuid.uuid4().hex}"
        if final.exists():
            os.rename(final, trash)
        os.rename(staged, final)
        shutil.rmtree(trash, ignore_errors=True)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def read_attrs(group_path: Path) -> dict[str, Any]:
    """Attributes of the Zarr v3 group (or store root) at ``group_path``, read from its ``zarr.json``;
    ``{}`` when it does not exist or cannot be parsed."""
    try:
        return json.loads((group_path / "zarr.json").read_text()).get("attributes", {})
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return {}


def update_attrs(group_path: Path, changes: Mapping[str, Any]) -> None:
    """Set ``changes`` in the attributes of the complete Zarr v3 group at ``group_path`` (its ``zarr.json``
    replaced atomically; the arrays are not touched). For facts that do not change the data, such as the
    slide file's new path after a cohort was moved.

    Raises:
        OSError: the group's metadata cannot be read or written.
    """
    from slidemil.core.atomic import write_text

    meta_path = group_path / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"] = {**meta.get("attributes", {}), **changes}
    write_text(meta_path, json.dumps(meta, indent=2))
