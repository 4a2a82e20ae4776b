"""The CONCH v1 checkpoint key table (docs/conch.md §2): 326 non-decoder keys, their shapes and synthetic init rules.

The table is a list of facts (names and shapes) shipped as package data, ``state_dict_keys.tsv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class KeySpec:
    """One row of the key table: state-dict key, tensor shape, synthetic init rule, required or optional."""

    key: str
    shape: tuple[int, ...]
    init: str
    required: bool


@lru_cache(maxsize=1)
def key_table() -> tuple[KeySpec, ...]:
    """Rows of ``state_dict_keys.tsv`` in file (registration) order; 315 required + 11 optional (caption pooler)."""
    text = resources.files(__package__).joinpath("state_dict_keys.tsv").read_text(encoding="utf-8")
    rows: list[KeySpec] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#") or line.startswith("key\t"):
            continue
        key, shape, init, presence = line.split("\t")
        dims = tuple(int(d) for d in shape.strip("[]").split(",") if d.strip())
        rows.append(KeySpec(key, dims, init, presence == "required"))
    return tuple(rows)
