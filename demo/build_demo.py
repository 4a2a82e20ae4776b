"""Build the demo cohort from the real slides in ``demo/real``: ``demo/slides/*.tiff``, ``demo/cohort.csv``
and ``demo/PROVENANCE.md``.

The outputs are committed, so users never need to run this; it documents (and reproduces, byte for
byte) how they were made::

    .venv/bin/python demo/build_demo.py [OUTPUT_FOLDER]     # default: demo/

What it does (see demo/README.md for why):

1. Reads CMU-1-Small-Region.svs (real H&E, 0.499 µm/px) with OpenSlide and OS-1-detail.ome.tif (real
   H&E, 0.2271 µm/px, mpp from its OME-XML) with tifffile.
2. Picks 12 square crops of CMU-1 ("patients"), each big enough for a 2 x 2 grid of 512-px patches at
   0.5 µm/px and with at least two grid cells mostly tissue, chosen greedily to overlap each other as
   little as the small source allows. Four patients (two per class) get a second slide: the crop
   shifted a little and turned 90° (as a second section lies differently on its glass).
3. Gives each patient a CONSTRUCTED label from its pixels: ``dense`` for the six patients with the
   highest nuclear density (share of pixels whose hematoxylin optical density exceeds a threshold;
   colour deconvolution of Ruifrok & Johnston 2001, via scikit-image), ``sparse`` for the other six.
4. Writes every slide as a pyramidal generic TIFF that OpenSlide reads (``generic-tiff``): each level
   one main-chain page, 256-px tiles, JPEG (YCbCr 4:2:0) quality 90, reduced levels marked
   ``SubfileType=1``, X/YResolution in pixels per centimetre so that ``openslide.mpp-x`` is the source
   mpp, and the ImageDescription a JSON record of where the pixels came from (``source``, ``x``, ``y``,
   ``size``, ``rotation`` or ``canvas``), which OpenSlide shows as ``tiff.ImageDescription``.
5. Adds the original files of ``demo/real`` as unlabelled rows (tiled and extracted, excluded from the
   task) and writes the cohort table and the provenance with the crop table.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import openslide
import pandas as pd
import tifffile
from skimage.color import rgb2hed, rgb2hsv
from skimage.filters import threshold_otsu

from slidemil.core.atomic import atomic_path, write_csv, write_text

DEMO = Path(__file__).resolve().parent
CMU1 = DEMO / "real" / "wsi-aperio-svs" / "CMU-1-Small-Region.svs"
OS1 = DEMO / "real" / "wsi-ome-tiff-he" / "OS-1-detail.ome.tif"

TARGET_MPP = 0.5  # µm/px the demo's tile stage uses
PATCH_SIZE = 512  # px at TARGET_MPP, i.e. 256 µm
CROP_SIZE = 1056  # level-0 px at 0.499 µm/px = 527 µm: room for a 2 x 2 patch grid, not 3 x 3
N_PATIENTS = 12
N_TWO_SLIDE_PATIENTS_PER_CLASS = 2
MIN_CELL_TISSUE = 0.5  # a grid cell counts as tissue when half its pixels are tissue
MIN_TISSUE_CELLS = 2  # every labelled slide must give at least this many tissue patches
SEARCH_STEP = 32  # px between candidate crop origins
SECOND_SLIDE_SHIFTS = ((96, 96), (-96, 96), (96, -96), (-96, -96))
NUCLEAR_OD = 0.06  # hematoxylin optical density above which a pixel counts as nuclear
OS1_CANVAS = 1300  # px: OS-1 (1101 px = 250 µm) centred on glass so one 256-µm patch fits
TILE = 256
JPEG_QUALITY = 90
MIN_LEVEL_SIDE = 512  # add 2x-reduced levels while the shorter side stays ≥ this (2 levels: 8 MB budget)

#: The original files, tiled and extracted but not part of the learning task (empty label).
#: (slide_id, path relative to demo/, patient_id, site, what the demo expects from the tile stage)
VENDOR_ROWS = (
    (
        "real-aperio-svs",
        "real/wsi-aperio-svs/CMU-1-Small-Region.svs",
        "src-CMU-1",
        "CMU-1",
        "ok: Aperio SVS, one level at 0.499 µm/px",
    ),
    (
        "real-generic-tiff",
        "real/wsi-derived-cmu1/CMU-1-Small-Region.pyramid.tiff",
        "src-CMU-1",
        "CMU-1",
        "ok: 4-level generic TIFF",
    ),
    (
        "real-ome-pyramid",
        "real/wsi-derived-cmu1/CMU-1-Small-Region.ome.tiff",
        "src-CMU-1",
        "CMU-1",
        "ok: OME-TIFF with SubIFD levels (OpenSlide sees level 0 only)",
    ),
    (
        "real-dicom-series",
        "real/wsi-derived-cmu1/dicom/1.2.826.0.1.3680043.8.498.9899136569992917906874156422226849724.dcm",
        "src-CMU-1",
        "CMU-1",
        "ok: 5-level DICOM WSI series (OpenSlide opens one file and finds the rest beside it)",
    ),
    (
        "real-ome-tiff",
        "real/wsi-ome-tiff-he/OS-1-detail.ome.tif",
        "src-OS-1",
        "OS-1",
        "skipped: 250 µm wide, smaller than one 256-µm patch; OpenSlide cannot open it (tifffile can)",
    ),
    (
        "real-ndpi-fluorescence",
        "real/wsi-hamamatsu-ndpi/test3-TRITC-2-560.ndpi",
        "src-NDPI-TRITC",
        "NDPI-TRITC",
        "ok: fluorescence (dark background), found by the brightness tissue method",
    ),
    (
        "real-dicom-camelyon",
        "real/wsi-dicom-camelyon/multiframe_camelyon_challenge_image.dcm",
        "src-Camelyon",
        "Camelyon",
        "failed: 29 µm/px, 58x coarser than the 0.5 µm/px target",
    ),
)


@dataclass(frozen=True)
class Crop:
    """One demo slide cut from a source image.

    ``x``, ``y``, ``size``: the square's top-left corner and side in the source's level-0 pixels;
    ``rotation``: quarter turns counter-clockwise (``np.rot90``) applied after cutting.
    """

    slide_id: str
    patient_id: str
    x: int
    y: int
    size: int
    rotation: int

    def description(self) -> dict:
        """The JSON record written into the slide's ImageDescription."""
        return {"source": CMU1.name, "x": self.x, "y": self.y, "size": self.size, "rotation": self.rotation}


def read_cmu1() -> tuple[np.ndarray, float]:
    """CMU-1-Small-Region level 0 as uint8 RGB ``[H, W, 3]`` and its mpp (µm/px) from OpenSlide."""
    with openslide.OpenSlide(CMU1) as slide:
        rgb = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
        return rgb, float(slide.properties[openslide.PROPERTY_NAME_MPP_X])


def read_os1() -> tuple[np.ndarray, float]:
    """OS-1-detail as uint8 RGB ``[H, W, 3]`` and its mpp (µm/px) from the OME-XML ``PhysicalSizeX``."""
    with tifffile.TiffFile(OS1) as tif:
        pixels = tif.pages[0].asarray()
        ome = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
    if ome.get("PhysicalSizeXUnit", "µm") not in ("µm", "um"):
        raise ValueError(f"{OS1}: PhysicalSizeX unit {ome['PhysicalSizeXUnit']!r}, expected µm")
    return pixels, float(ome["PhysicalSizeX"])


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """Tissue pixels of ``rgb`` ``[H, W, 3]`` → bool ``[H, W]``: HSV saturation above its Otsu threshold."""
    saturation = rgb2hsv(rgb)[..., 1]
    return saturation > threshold_otsu(saturation)


def nuclear_density(rgb: np.ndarray) -> float:
    """Share of pixels whose hematoxylin optical density exceeds ``NUCLEAR_OD``.

    Hematoxylin from colour deconvolution (Ruifrok & Johnston, Anal. Quant. Cytol. Histol. 2001,
    ``skimage.color.rgb2hed``). Glass counts in the denominator, so sparse tissue scores low too.
    """
    return float((rgb2hed(rgb)[..., 0] > NUCLEAR_OD).mean())


def cell_tissue(mask: np.ndarray, cell: int) -> list[float]:
    """Tissue fraction of each cell of a grid of ``cell``-px squares from the top-left corner of ``mask``."""
    rows, cols = mask.shape[0] // cell, mask.shape[1] // cell
    return [
        float(mask[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell].mean())
        for r in range(rows)
        for c in range(cols)
    ]


def enough_tissue(mask: np.ndarray, cell: int) -> bool:
    """At least ``MIN_TISSUE_CELLS`` grid cells of ``mask`` are at least ``MIN_CELL_TISSUE`` tissue."""
    return sum(f >= MIN_CELL_TISSUE for f in cell_tissue(mask, cell)) >= MIN_TISSUE_CELLS


def overlap(a: tuple[int, int], b: tuple[int, int], size: int) -> float:
    """Intersection over union of two ``size``-px squares with top-left corners ``a`` and ``b``."""
    ix = max(0, size - abs(a[0] - b[0]))
    iy = max(0, size - abs(a[1] - b[1]))
    inter = ix * iy
    return inter / (2 * size * size - inter)


def choose_crops(mask: np.ndarray, size: int, cell: int, n: int) -> list[tuple[int, int]]:
    """``n`` crop origins (x, y): each crop has enough tissue; greedily the least overlapping, then most tissue.

    Deterministic: candidates on a ``SEARCH_STEP`` grid, ties broken by tissue then position.
    """
    height, width = mask.shape
    candidates = []
    for y in range(0, height - size + 1, SEARCH_STEP):
        for x in range(0, width - size + 1, SEARCH_STEP):
            window = mask[y : y + size, x : x + size]
            if enough_tissue(window, cell):
                candidates.append(((x, y), float(window.mean())))
    if len(candidates) < n:
        raise ValueError(f"only {len(candidates)} crops of {size} px have enough tissue; need {n}")
    chosen: list[tuple[int, int]] = []
    for _ in range(n):
        origin, _tissue = min(
            candidates,
            key=lambda c: (
                max((overlap(c[0], o, size) for o in chosen), default=0.0),
                -c[1],
                c[0][1],
                c[0][0],
            ),
        )
        chosen.append(origin)
    return sorted(chosen, key=lambda o: (o[1], o[0]))  # patients numbered top to bottom


def second_crop(mask: np.ndarray, origin: tuple[int, int], size: int, cell: int) -> tuple[int, int] | None:
    """A shifted origin near ``origin`` whose crop, turned 90°, still has enough tissue (None if no shift works)."""
    height, width = mask.shape
    for dx, dy in SECOND_SLIDE_SHIFTS:
        x = min(max(origin[0] + dx, 0), width - size)
        y = min(max(origin[1] + dy, 0), height - size)
        if (x, y) != origin and enough_tissue(np.rot90(mask[y : y + size, x : x + size]), cell):
            return x, y
    return None


def cut(rgb: np.ndarray, crop: Crop) -> np.ndarray:
    """The pixels of ``crop`` from ``rgb``, turned by ``crop.rotation`` quarter turns (contiguous copy)."""
    window = rgb[crop.y : crop.y + crop.size, crop.x : crop.x + crop.size]
    return np.ascontiguousarray(np.rot90(window, crop.rotation))


def on_glass(rgb: np.ndarray, canvas: int, glass: np.ndarray) -> np.ndarray:
    """``rgb`` centred on a ``canvas``-px square filled with the ``glass`` colour (uint8 ``[3]``)."""
    out = np.empty((canvas, canvas, 3), np.uint8)
    out[:] = glass
    top, left = (canvas - rgb.shape[0]) // 2, (canvas - rgb.shape[1]) // 2
    out[top : top + rgb.shape[0], left : left + rgb.shape[1]] = rgb
    return out


def pyramid(rgb: np.ndarray) -> list[np.ndarray]:
    """Level 0 and successive 2x area-averaged reductions while the shorter side stays ≥ ``MIN_LEVEL_SIDE``."""
    levels = [rgb]
    while min(levels[-1].shape[:2]) // 2 >= MIN_LEVEL_SIDE:
        height, width = levels[-1].shape[:2]
        levels.append(cv2.resize(levels[-1], (width // 2, height // 2), interpolation=cv2.INTER_AREA))
    return levels


def write_pyramid(path: Path, rgb: np.ndarray, mpp: float, description: dict) -> None:
    """Write ``rgb`` ``[H, W, 3]`` at ``mpp`` µm/px as a pyramidal tiled JPEG generic TIFF, atomically.

    Each level is a main-chain page (OpenSlide's generic-tiff reader ignores SubIFDs) with its own
    resolution in pixels/cm (``1e4 / mpp_level``); ``description`` goes to level 0's ImageDescription as JSON.
    """
    with atomic_path(path, suffix=".tiff") as tmp, tifffile.TiffWriter(tmp) as tif:
        for index, level in enumerate(pyramid(rgb)):
            pixels_per_cm = 1e4 / (mpp * rgb.shape[1] / level.shape[1])
            tif.write(
                level,
                photometric="rgb",  # stored as JPEG YCbCr 4:2:0 (tifffile converts)
                compression="jpeg",
                compressionargs={"level": JPEG_QUALITY},
                tile=(TILE, TILE),
                resolution=(pixels_per_cm, pixels_per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=1 if index else 0,
                description=None if index else json.dumps(description, sort_keys=True),
                metadata=None,
            )
    path.chmod(0o644)  # mkstemp made it owner-only


def build_cmu1_cohort(rgb: np.ndarray, mpp: float) -> tuple[list[Crop], dict[str, str], dict[str, float]]:
    """The CMU-1 crops, each patient's constructed label and its nuclear density."""
    mask = tissue_mask(rgb)
    cell = round(PATCH_SIZE * TARGET_MPP / mpp)  # one patch in level-0 px
    origins = choose_crops(mask, CROP_SIZE, cell, N_PATIENTS)
    patients = [f"P{i + 1:02d}" for i in range(N_PATIENTS)]
    density = {
        pid: nuclear_density(rgb[y : y + CROP_SIZE, x : x + CROP_SIZE])
        for pid, (x, y) in zip(patients, origins, strict=True)
    }
    ranked = sorted(patients, key=lambda p: (-density[p], p))
    labels = {p: ("dense" if rank < N_PATIENTS // 2 else "sparse") for rank, p in enumerate(ranked)}
    seconds = {p: second_crop(mask, o, CROP_SIZE, cell) for p, o in zip(patients, origins, strict=True)}
    two_slides = set()
    for cls in ("dense", "sparse"):
        able = [p for p in patients if labels[p] == cls and seconds[p] is not None]
        if len(able) < N_TWO_SLIDE_PATIENTS_PER_CLASS:
            raise ValueError(f"only {len(able)} {cls} patients can have a second slide")
        two_slides.update(able[:N_TWO_SLIDE_PATIENTS_PER_CLASS])
    crops = []
    for pid, origin in zip(patients, origins, strict=True):
        crops.append(Crop(f"cmu1-{pid}-a", pid, *origin, CROP_SIZE, 0))
        if pid in two_slides:
            crops.append(Crop(f"cmu1-{pid}-b", pid, *seconds[pid], CROP_SIZE, 1))
    return crops, labels, density


def sha256(path: Path) -> str:
    """SHA-256 (hex) of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def provenance(
    slides: Path,
    crops: list[Crop],
    labels: dict[str, str],
    density: dict[str, float],
    cmu1_mpp: float,
    os1_mpp: float,
    glass: np.ndarray,
) -> str:
    """The text of demo/PROVENANCE.md: sources, licences, and one row per slide written in ``slides``."""
    rows = "\n".join(
        f"| `slides/{c.slide_id}.tiff` | CMU-1-Small-Region.svs | x={c.x}, y={c.y}, {c.size}x{c.size} px"
        f"{', turned 90°' if c.rotation else ''} | {cmu1_mpp} | {c.patient_id} | {labels[c.patient_id]} "
        f"({density[c.patient_id]:.3f}) | {(slides / f'{c.slide_id}.tiff').stat().st_size:,} | "
        f"`{sha256(slides / f'{c.slide_id}.tiff')[:16]}…` |"
        for c in crops
    )
    vendor = "\n".join(
        f"| `{sid}` | `{path}` | {pid} | {expected} |" for sid, path, pid, _site, expected in VENDOR_ROWS
    )
    os1 = slides / "os1-40x.tiff"
    return f"""# Demo cohort: where every file comes from

Generated by `demo/build_demo.py` (deterministic; rerun it to reproduce these files byte for byte).
All pixels are real H&E; the containers, crops, patient IDs and labels are ours. The labels are
**constructed** (see README.md): the demo exercises the pipeline, it is not a clinical task.

## Sources (copies in `real/`, each with its own PROVENANCE.md)

| source | what | licence |
|---|---|---|
| `real/wsi-aperio-svs/CMU-1-Small-Region.svs` | Aperio SVS, real H&E, 2220x2967 px at {cmu1_mpp} µm/px (OpenSlide test data CMU-1) | CC0-1.0 |
| `real/wsi-ome-tiff-he/OS-1-detail.ome.tif` | OME-TIFF, real H&E crop of OpenSlide's Hamamatsu OS-1, 1101x1101 px at {os1_mpp:.4f} µm/px | OpenSlide test data: free to use and distribute, with or without modification; credit OpenSlide |

The other files in `real/` (NDPI fluorescence, DICOM Camelyon, derived CMU-1 containers) appear in
`cohort.csv` as themselves, unlabelled; their provenance is in their folders.

## How the slides were made

- Pixels: CMU-1 read with OpenSlide (level 0, RGB); OS-1 with tifffile, mpp from its OME-XML.
- Crops: {CROP_SIZE}x{CROP_SIZE} px of CMU-1 ({CROP_SIZE * cmu1_mpp:.0f} µm, room for a 2x2 grid of
  {PATCH_SIZE}-px patches at {TARGET_MPP} µm/px). Tissue = HSV saturation above Otsu's threshold; every crop
  has at least {MIN_TISSUE_CELLS} grid cells that are at least {MIN_CELL_TISSUE:.0%} tissue. Crops were
  chosen greedily to overlap each other as little as the 1.1 x 1.5 mm source allows: **they still
  overlap**, so the same tissue appears in slides of different "patients".
- A patient's second slide (`-b`) is its crop shifted by up to 96 px and turned 90° counter-clockwise.
- `slides/os1-40x.tiff`: all of OS-1 ({os1_mpp:.4f} µm/px, i.e. a 40x-like scan) centred on a
  {OS1_CANVAS}x{OS1_CANVAS} px canvas of glass colour RGB {tuple(int(v) for v in glass)} (the median
  non-tissue pixel of CMU-1), so that one 256-µm patch fits; unlabelled. {os1.stat().st_size:,} bytes,
  sha256 `{sha256(os1)[:16]}…`.
- Containers: tifffile {tifffile.__version__}, OpenCV {cv2.__version__} (2x INTER_AREA reductions), one
  main-chain page per level, {TILE}-px tiles, JPEG (YCbCr 4:2:0) quality {JPEG_QUALITY}, X/YResolution
  in pixels/cm, so OpenSlide reports `generic-tiff` with `openslide.mpp-x` = the source mpp.
- Labels: nuclear density = share of pixels with hematoxylin optical density > {NUCLEAR_OD}
  (`skimage.color.rgb2hed`, Ruifrok & Johnston 2001) in the patient's first crop; the
  {N_PATIENTS // 2} highest are `dense`, the rest `sparse`.

Licences: slides cut from CMU-1 are CC0-1.0 like their source; `os1-40x.tiff` carries OS-1's terms
(free to use and distribute, with or without modification; credit: OpenSlide test data).

## Slides

| file | cut from | region (level-0 px of the source) | mpp (µm/px) | patient | label (nuclear density) | bytes | sha256 |
|---|---|---|---|---|---|---|---|
{rows}

## Unlabelled rows of `cohort.csv` (tiled and extracted, excluded from the task)

`os1-40x` (above) and the original files, each as its own "patient" named after its source:

| slide_id | path | patient_id | what the tile stage should report at {TARGET_MPP} µm/px, {PATCH_SIZE}-px patches |
|---|---|---|---|
{vendor}
"""


def main(out: Path = DEMO) -> None:
    """Write ``out``/slides/*.tiff, ``out``/cohort.csv and ``out``/PROVENANCE.md (default ``out``: demo/)."""
    slides = out / "slides"
    cmu1, cmu1_mpp = read_cmu1()
    os1, os1_mpp = read_os1()
    crops, labels, density = build_cmu1_cohort(cmu1, cmu1_mpp)
    for crop in crops:
        write_pyramid(slides / f"{crop.slide_id}.tiff", cut(cmu1, crop), cmu1_mpp, crop.description())
    glass = np.median(cmu1[~tissue_mask(cmu1)], axis=0).astype(np.uint8)
    offset = (OS1_CANVAS - os1.shape[1]) // 2, (OS1_CANVAS - os1.shape[0]) // 2
    os1_record = {
        "source": OS1.name,
        "canvas": OS1_CANVAS,
        "x": offset[0],
        "y": offset[1],
        "glass": glass.tolist(),
    }
    write_pyramid(slides / "os1-40x.tiff", on_glass(os1, OS1_CANVAS, glass), os1_mpp, os1_record)
    written = {f"{c.slide_id}.tiff" for c in crops} | {"os1-40x.tiff"}
    for stale in slides.glob("*.tiff"):  # the slides folder belongs to this script: drop an older build's
        if stale.name not in written:
            stale.unlink()

    rows = [
        {
            "slide_id": c.slide_id,
            "path": f"slides/{c.slide_id}.tiff",
            "patient_id": c.patient_id,
            "label": labels[c.patient_id],
            "mpp": "",
            "site": "CMU-1",
        }
        for c in crops
    ]
    rows.append(
        {
            "slide_id": "os1-40x",
            "path": "slides/os1-40x.tiff",
            "patient_id": "src-OS-1",
            "label": "",
            "mpp": "",
            "site": "OS-1",
        }
    )
    rows += [
        {"slide_id": sid, "path": path, "patient_id": pid, "label": "", "mpp": "", "site": site}
        for sid, path, pid, site, _expected in VENDOR_ROWS
    ]
    table = pd.DataFrame(rows)
    write_csv(out / "cohort.csv", table)
    write_text(out / "PROVENANCE.md", provenance(slides, crops, labels, density, cmu1_mpp, os1_mpp, glass))
    task = table[table["label"] != ""]
    print(task.groupby("label").agg(slides=("slide_id", "size"), patients=("patient_id", "nunique")))
    size = sum(p.stat().st_size for p in slides.glob("*.tiff"))
    print(f"{len(table) - len(task)} unlabelled rows; {slides}: {size:,} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEMO)
