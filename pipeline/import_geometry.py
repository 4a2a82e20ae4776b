"""The true level-0 patch size and magnification of imported CLAM / TRIDENT features.

Every attribute the file gives is honoured, and they must agree:

- CLAM (``coords`` attrs): ``patch_size`` at ``patch_level`` whose ``downsample`` is (dx, dy) →
  level-0 side ``patch_size × dx``. CLAM stores no magnification.
- TRIDENT (``coords`` attrs): ``patch_size`` at ``target_magnification``, ``patch_size_level0``,
  ``level0_magnification`` → level-0 side ``patch_size × level0_magnification / target_magnification``.
- The command line (``--patch-size`` in level-0 px, ``--magnification``) fills in what the file lacks and
  must agree with what it says.

Written here since neither tool ships a reader of the other's attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_TOLERANCE = 0.01  # relative: 512 vs 512.4 after a float downsample agree


class GeometryError(ValueError):
    """The attributes are missing or contradict each other; the message names them."""


def level0_geometry(attrs: Mapping[str, Any], patch_size_arg: int | None = None,
                    magnification_arg: float | None = None) -> tuple[int, float | None]:
    """(patch side in level-0 px, magnification of the patches or None) from a feature file's attributes.

    Raises:
        GeometryError: the level-0 side cannot be derived (e.g. ``patch_level`` > 0 without
            ``downsample``), or two attributes (or an attribute and an argument) disagree.
    """
    sizes: dict[str, float] = {}  # how each source gives the level-0 side
    patch_size = _number(attrs, "patch_size")
    if _number(attrs, "patch_size_level0") is not None:
        sizes["patch_size_level0"] = _number(attrs, "patch_size_level0")
    if patch_size is not None:
        level = _number(attrs, "patch_level")
        downsample = attrs.get("downsample")
        if downsample not in (None, ""):
            dx, dy = _pair(downsample)
            if not _agree(dx, dy):
                raise GeometryError(f"downsample={list(_pair(downsample))} differs in x and y; square patches "
                                    "need equal downsamples")
            sizes["patch_size × downsample"] = patch_size * dx
        elif level not in (None, 0):
            raise GeometryError(f"patch_level={level:g} without downsample: the level-0 patch size is unknown; "
                                "pass --patch-size (level-0 px)")
        level0_mag, target_mag = _number(attrs, "level0_magnification"), _target_magnification(attrs)
        if level0_mag and target_mag:
            sizes["patch_size × level0_magnification / target_magnification"] = patch_size * level0_mag / target_mag
        if not sizes:  # patch_size alone (patch_level 0 or absent): it is the level-0 side
            sizes["patch_size"] = patch_size
    if patch_size_arg is not None:
        sizes["--patch-size"] = float(patch_size_arg)
    if not sizes:
        raise GeometryError("no patch_size, patch_size_level0 or downsample attribute; pass --patch-size "
                            "(level-0 px)")
    _check_agree(sizes)
    magnifications: dict[str, float] = {}
    if _target_magnification(attrs):
        magnifications["target_magnification"] = _target_magnification(attrs)
    level0_mag = _number(attrs, "level0_magnification")
    if level0_mag and patch_size:
        magnifications["level0_magnification × patch_size / level-0 size"] = (
            level0_mag * patch_size / next(iter(sizes.values())))
    if magnification_arg is not None:
        magnifications["--magnification"] = float(magnification_arg)
    if magnifications:
        _check_agree(magnifications)
    size0 = next(iter(sizes.values()))
    return int(round(size0)), (next(iter(magnifications.values())) if magnifications else None)


def _target_magnification(attrs: Mapping[str, Any]) -> float | None:
    return _number(attrs, "target_magnification") or _number(attrs, "magnification")


def _number(attrs: Mapping[str, Any], key: str) -> float | None:
    value = attrs.get(key)
    if value in (None, ""):
        return None
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        raise GeometryError(f"attribute {key}={value!r} is not a number") from None


def _pair(value: Any) -> tuple[float, float]:
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return float(value[0]), float(value[0])
        return float(value[0]), float(value[1])
    return float(value), float(value)


def _agree(a: float, b: float) -> bool:
    return abs(a - b) <= _TOLERANCE * max(abs(a), abs(b))


def _check_agree(values: dict[str, float]) -> None:
    (first, reference), *rest = values.items()
    for name, value in rest:
        if not _agree(value, reference):
            raise GeometryError(f"{name} gives {value:g} but {first} gives {reference:g}; fix the file's "
                                "attributes or import without the contradicting option")
