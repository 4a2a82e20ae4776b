"""Choosing the pyramid level to read from, by resolution (never by level index).

Pure arithmetic over ``level_downsamples`` (floats, often non-integer such as 2.0003 or 64.08) and the
level-0 mpp. The chosen level is the coarsest one that is still at least as fine as the target (within a
tolerance); the patch is read there at ``read_size`` px and resized to ``patch_size`` px at the target mpp.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from slidemil.core.errors import SlideError


@dataclass(frozen=True)
class LevelChoice:
    """Where and how to read patches of ``patch_size`` px at ``target_mpp``.

    Attributes:
        level: pyramid level to read (index into the slide's levels, chosen by mpp).
        level_downsample: downsample of that level relative to level 0.
        level_mpp: µm/px of that level.
        read_size: side of the square read at ``level`` (px at that level), resized to ``patch_size``.
        patch_size: side of a patch at the target mpp (px).
        patch_size_level0: side of a patch in level-0 px.
        target_downsample: target mpp / level-0 mpp (< 1 means upsampling).
    """

    level: int
    level_downsample: float
    level_mpp: float
    read_size: int
    patch_size: int
    patch_size_level0: int
    target_downsample: float


def choose_level(
    level_downsamples: Sequence[float],
    mpp: float,
    target_mpp: float,
    patch_size: int,
    tolerance: float = 0.05,
    max_upsample: float = 0.1,
) -> LevelChoice:
    """Choose the level to read ``patch_size``-px patches at ``target_mpp`` from.

    Args:
        level_downsamples: downsample of each level vs level 0, as the slide reports it.
        mpp: level-0 resolution in µm/px.
        target_mpp: wanted resolution in µm/px (0.5 ≈ 20x).
        patch_size: patch side in px at ``target_mpp``.
        tolerance: a level up to this fraction coarser than the target still counts as the target
            (0.05 admits a 0.502 µm/px level for 0.5).
        max_upsample: how much finer than the scan the target may be (0.1 = 10 % upsampling).

    Raises:
        SlideError: the target is finer than the scan by more than ``max_upsample``; or bad inputs.
    """
    if patch_size < 1 or target_mpp <= 0 or mpp <= 0:
        raise SlideError(f"invalid tiling request: patch_size={patch_size}, target_mpp={target_mpp}, mpp={mpp}")
    if not level_downsamples:
        raise SlideError("the slide reports no pyramid levels")
    target_downsample = target_mpp / mpp
    upsample = mpp / target_mpp - 1.0
    if upsample > max_upsample + 1e-9:
        raise SlideError(
            f"target resolution {target_mpp:g} µm/px is {mpp / target_mpp:.3g}x finer than the scan "
            f"({mpp:.4g} µm/px); allowed upsampling is {max_upsample:.0%}. Use tile.target_mpp >= "
            f"{mpp / (1 + max_upsample):.3g} for this slide, or drop it from the cohort"
        )
    usable = [
        (ds, i) for i, ds in enumerate(level_downsamples) if ds <= target_downsample * (1 + tolerance)
    ]
    level_downsample, level = max(usable) if usable else min((ds, i) for i, ds in enumerate(level_downsamples))
    read_size = max(1, round(patch_size * target_downsample / level_downsample))
    return LevelChoice(
        level=level,
        level_downsample=float(level_downsample),
        level_mpp=mpp * level_downsample,
        read_size=read_size,
        patch_size=patch_size,
        patch_size_level0=max(1, round(patch_size * target_downsample)),
        target_downsample=target_downsample,
    )


def best_level_for_downsample(level_downsamples: Sequence[float], downsample: float) -> int:
    """Index of the coarsest level whose downsample is ≤ ``downsample`` (level 0 if none is).

    Used to read overviews (tissue mask, QC thumbnail) from the cheapest level that is still fine
    enough, with the remaining factor done by an area resize.
    """
    usable = [(ds, i) for i, ds in enumerate(level_downsamples) if ds <= downsample * 1.001]
    return max(usable)[1] if usable else 0
