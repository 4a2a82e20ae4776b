"""Resolving the level-0 resolution (µm per pixel, "mpp") of a slide from its metadata.

Pure functions over a flat ``properties`` mapping (OpenSlide's property names; the tifffile and image
backends of :mod:`extract.slide` fill the same names). Sources are tried in this documented order; the
first plausible value wins:

1. ``override`` — the cohort table's ``mpp`` column (source ``override``);
2. ``openslide.mpp-x`` / ``openslide.mpp-y`` (source ``openslide``);
3. vendor fields: ``aperio.MPP``, ``philips.DICOM_PIXEL_SPACING`` (mm), ``ventana.ScanRes``,
   OME-XML ``ome.PhysicalSizeX`` with its unit (source ``aperio`` | ``philips`` | ``ventana`` | ``ome``);
4. TIFF ``XResolution``/``YResolution`` with ``ResolutionUnit`` centimeter or inch (source ``tiff``);
5. DICOM ``PixelSpacing`` in mm (source ``dicom``).

A value outside the plausible range (default 0.05–50 µm/px) is skipped with a note; if nothing usable is
left the slide fails with a reason that tells the user to add an ``mpp`` column.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from slidemil.core.errors import SlideError

#: Plausible level-0 resolutions in µm/px. Scanners give 0.1–1 µm/px; the upper bound admits real
#: low-resolution DICOM levels (e.g. a Camelyon level at 29 µm/px, refused later for a fine target with
#: its own reason) while a DPI default of 72 (352.8 µm/px) or a pixels/cm of 1 is rejected.
PLAUSIBLE_MPP = (0.05, 50.0)

_UM_PER = {"m": 1e6, "cm": 1e4, "mm": 1e3, "µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3}
_TIFF_UNIT_UM = {"centimeter": 1e4, "cm": 1e4, "3": 1e4, "inch": 25400.0, "2": 25400.0}
_DICOM_SPACING_KEYS = (
    "dicom.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing[{}]",
    "dicom.PixelSpacing[{}]",
)


@dataclass(frozen=True)
class MppResult:
    """A resolved level-0 resolution: ``mpp`` in µm/px, the ``source`` it came from, and a ``note`` when an
    override disagrees with the file's own plausible metadata ("" otherwise)."""

    mpp: float
    source: str
    note: str = ""


#: an override this many times finer or coarser than the file's own mpp is named in the slide's reason
OVERRIDE_DISAGREES = 1.25


def resolve_mpp(
    properties: Mapping[str, str],
    override: float | None = None,
    plausible: tuple[float, float] = PLAUSIBLE_MPP,
) -> MppResult:
    """Return the level-0 mpp of a slide (µm/px) and its source, in the module's documented order.

    Args:
        properties: slide metadata, OpenSlide property names (``openslide.mpp-x``, ``aperio.MPP``,
            ``tiff.XResolution``, ``tiff.ResolutionUnit``, …); values as text.
        override: the cohort ``mpp`` (µm/px) or None/NaN; wins over the file when given.
        plausible: (low, high) µm/px outside which a value is treated as wrong metadata.

    Raises:
        SlideError: the override is not plausible, or no source gives a plausible value (the message
            lists what was found and says to add an ``mpp`` column to the cohort table).
    """
    low, high = plausible
    if override is not None and not math.isnan(override):
        if not low <= override <= high:
            raise SlideError(
                f"cohort mpp override {override:g} µm/px is outside the plausible range {low:g}–{high:g} µm/px; "
                "fix the `mpp` column (µm per pixel, e.g. 0.25 for 40x, 0.5 for 20x)"
            )
        note = ""
        try:
            own = resolve_mpp(properties, None, plausible)
        except SlideError:
            own = None
        if own is not None and max(override / own.mpp, own.mpp / override) > OVERRIDE_DISAGREES:
            note = (f"the cohort mpp {override:g} µm/px overrides the file's {own.mpp:.4g} µm/px ({own.source}), "
                    f"{max(override / own.mpp, own.mpp / override):.1f}x apart: check the `mpp` column")
        return MppResult(float(override), "override", note)
    rejected: list[str] = []
    for source, reader in _SOURCES:
        try:
            value = reader(properties)
        except (ValueError, ZeroDivisionError) as exc:
            rejected.append(f"{source}: {exc}")
            continue
        if value is None:
            continue
        if low <= value <= high:
            return MppResult(value, source)
        rejected.append(f"{source}: {value:g} µm/px is outside {low:g}–{high:g}")
    found = "; ".join(rejected) if rejected else "the file has no resolution metadata"
    raise SlideError(f"no usable mpp ({found}); add an `mpp` column (µm/px) to the cohort table for this slide")


def _mean_xy(x: float | None, y: float | None) -> float | None:
    """Mean of the x and y pixel sizes; non-square pixels (> 5 % apart) are refused."""
    if x is None:
        return y
    if y is None:
        return x
    if abs(x - y) > 0.05 * max(x, y):
        raise ValueError(f"non-square pixels {x:g} x {y:g} µm")
    return (x + y) / 2


def _number(properties: Mapping[str, str], key: str) -> float | None:
    raw = properties.get(key)
    if raw is None or str(raw).strip() == "":
        return None
    value = float(str(raw).strip().strip('"'))
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{key}={raw!r}")
    return value


def _openslide(p: Mapping[str, str]) -> float | None:
    return _mean_xy(_number(p, "openslide.mpp-x"), _number(p, "openslide.mpp-y"))


def _aperio(p: Mapping[str, str]) -> float | None:
    """``aperio.MPP``, or ``|MPP = x|`` in an Aperio ImageDescription a reader did not parse."""
    value = _number(p, "aperio.MPP")
    description = p.get("tiff.ImageDescription", "")
    if value is None and description.startswith("Aperio"):
        match = re.search(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)", description)
        value = float(match.group(1)) if match else None
    return value


def _philips(p: Mapping[str, str]) -> float | None:
    raw = p.get("philips.DICOM_PIXEL_SPACING")
    if not raw:
        return None
    values = [float(v) for v in re.findall(r"[-+0-9.eE]+", raw)]
    if not values:
        raise ValueError(f"philips.DICOM_PIXEL_SPACING={raw!r}")
    return _mean_xy(values[0] * 1e3, values[-1] * 1e3)  # mm → µm


def _ventana(p: Mapping[str, str]) -> float | None:
    return _number(p, "ventana.ScanRes")


def _ome(p: Mapping[str, str]) -> float | None:
    def size(axis: str) -> float | None:
        value = _number(p, f"ome.PhysicalSize{axis}")
        if value is None:
            return None
        unit = p.get(f"ome.PhysicalSize{axis}Unit", "µm").strip()
        if unit not in _UM_PER:
            raise ValueError(f"unknown OME unit {unit!r}")
        return value * _UM_PER[unit]

    return _mean_xy(size("X"), size("Y"))


def _tiff(p: Mapping[str, str]) -> float | None:
    x, y = _number(p, "tiff.XResolution"), _number(p, "tiff.YResolution")
    if x is None and y is None:
        return None
    unit = str(p.get("tiff.ResolutionUnit", "inch")).strip().lower()  # TIFF default unit is inch
    if unit not in _TIFF_UNIT_UM:
        raise ValueError(f"ResolutionUnit {unit!r} has no physical size")
    scale = _TIFF_UNIT_UM[unit]  # µm per unit; resolution is pixels per unit
    return _mean_xy(scale / x if x else None, scale / y if y else None)


def _dicom(p: Mapping[str, str]) -> float | None:
    for key in _DICOM_SPACING_KEYS:
        row, col = _number(p, key.format(0)), _number(p, key.format(1))
        if row is not None or col is not None:
            return _mean_xy(row * 1e3 if row else None, col * 1e3 if col else None)  # mm → µm
    return None


_SOURCES: tuple[tuple[str, Callable[[Mapping[str, str]], float | None]], ...] = (
    ("openslide", _openslide),
    ("aperio", _aperio),
    ("philips", _philips),
    ("ventana", _ventana),
    ("ome", _ome),
    ("tiff", _tiff),
    ("dicom", _dicom),
)
