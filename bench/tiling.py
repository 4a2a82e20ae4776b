"""Benchmark of the `tile` stage: speed and peak memory on a large pyramidal JPEG TIFF vs one 4x smaller.

Builds two slides from real tissue pixels (the CMU-1 region of demo/real, tiled repeatedly) with
tifffile, streamed tile by tile (the 3.6 GB of level-0 pixels never sit in memory): a large one
(default 40,960 x 30,720 px at 0.25 µm/px, levels 1/4/16/64) and a small one with a quarter of the area.
Each slide is tiled by `slidemil tile` in its own subprocess; peak RSS and CPU seconds come from
``resource.getrusage(RUSAGE_CHILDREN)`` taken in a wrapper process per slide (benchlib.run_measured), so the
two figures are independent. Memory must not scale with area: the ratio large/small should stay near 1.

Usage: .venv/bin/python bench/tiling.py [--workdir DIR] [--width 40960 --height 30720] [--keep]
Prints a table and, last, one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import tifffile
from benchlib import REPO, run_measured

SOURCE = REPO / "demo" / "real" / "wsi-aperio-svs" / "CMU-1-Small-Region.svs"
MPP = 0.25
DOWNSAMPLES = (1, 4, 16, 64)
TILE = 512

_STAGE = """
import argparse, logging, sys
from slidemil.core.params import load_params
from slidemil.pipeline.stages import tile
logging.basicConfig(level=logging.WARNING)
sys.exit(tile.run(load_params(sys.argv[1]), argparse.Namespace(force=True)))
"""


def source_pixels() -> np.ndarray:
    """uint8 [H, W, 3] real H&E pixels of CMU-1-Small-Region (about 20 MB)."""
    from slidemil.extract.slide import open_slide

    with open_slide(SOURCE) as slide:
        return slide.read_region((0, 0), 0, slide.dimensions)


def _tiles(source: np.ndarray, width: int, height: int):
    """Yield [TILE, TILE, 3] tiles, row-major, of ``source`` repeated to ``width`` x ``height``."""
    sh, sw = source.shape[:2]
    for y in range(0, height, TILE):
        rows = np.arange(y, y + TILE) % sh
        band = source[rows]
        for x in range(0, width, TILE):
            yield band[:, np.arange(x, x + TILE) % sw]


def write_slide(path: Path, source: np.ndarray, width: int, height: int) -> None:
    """Pyramidal JPEG TIFF (levels in the main IFD chain, as OpenSlide's generic-tiff reads), streamed."""
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for i, ds in enumerate(DOWNSAMPLES):
            w, h = width // ds, height // ds
            level_source = source if ds == 1 else cv2.resize(
                source, (source.shape[1] // ds, source.shape[0] // ds), interpolation=cv2.INTER_AREA)
            tif.write(_tiles(level_source, w, h), shape=(h, w, 3), dtype=np.uint8, tile=(TILE, TILE),
                      compression="jpeg", compressionargs={"level": 85}, photometric="rgb",
                      resolution=(1e4 / (MPP * ds), 1e4 / (MPP * ds)), resolutionunit="CENTIMETER",
                      subfiletype=0 if i == 0 else 1, metadata=None)


def tile_in_subprocess(workdir: Path, name: str, slide: Path) -> dict[str, float]:
    """Run the tile stage on one slide in a fresh process; returns wall seconds, peak RSS, manifest row."""
    project = workdir / name
    project.mkdir(exist_ok=True)
    (project / "cohort.csv").write_text(f"slide_id,path\n{name},{slide}\n")
    (project / "params.yaml").write_text("cohort: cohort.csv\ntile:\n  output: tiles\n")
    wall, cpu, peak_mb = run_measured([sys.executable, "-c", _STAGE, "params.yaml"], project)
    manifest = pd.read_csv(project / "tiles" / "manifest.csv")
    if len(manifest) != 1 or manifest.loc[0, "status"] != "ok":
        raise SystemExit(f"unexpected tile result on {name}: {manifest.to_dict('records')}")
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak_mb, "stage_s": float(manifest.loc[0, "seconds"]),
            "n_patches": int(manifest.loc[0, "n_patches"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the slides (default: a temp dir)")
    parser.add_argument("--width", type=int, default=40960)
    parser.add_argument("--height", type=int, default=30720)
    parser.add_argument("--keep", action="store_true", help="keep the slides")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-tiling-"))
    workdir.mkdir(parents=True, exist_ok=True)
    source = source_pixels()
    sizes = {"large": (args.width, args.height), "small": (args.width // 2, args.height // 2)}
    figures: dict[str, float] = {}
    try:
        for name, (w, h) in sizes.items():
            path = workdir / f"{name}.tif"
            start = time.perf_counter()
            write_slide(path, source, w, h)
            figures[f"write_s_{name}"] = round(time.perf_counter() - start, 1)
            figures[f"file_mb_{name}"] = round(path.stat().st_size / 2**20, 1)
            figures[f"width_px_{name}"], figures[f"height_px_{name}"] = w, h
        for name in sizes:
            run = tile_in_subprocess(workdir, name, workdir / f"{name}.tif")
            figures[f"stage_seconds_per_slide_{name}"] = round(run["stage_s"], 3)
            figures[f"process_seconds_per_slide_{name}"] = round(run["wall_s"], 2)
            figures[f"process_cpu_seconds_per_slide_{name}"] = round(run["cpu_s"], 2)
            figures[f"slides_per_minute_{name}"] = round(60 / run["stage_s"], 1)
            figures[f"peak_rss_mb_{name}"] = round(run["peak_rss_mb"], 1)
            figures[f"n_patches_{name}"] = run["n_patches"]
        figures["area_ratio_large_vs_small"] = round(
            sizes["large"][0] * sizes["large"][1] / (sizes["small"][0] * sizes["small"][1]), 2)
        figures["peak_rss_ratio_large_vs_small"] = round(figures["peak_rss_mb_large"] / figures["peak_rss_mb_small"], 3)
        figures["level0_rgba_mb_if_read_whole_large"] = round(args.width * args.height * 4 / 2**20)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{'figure':42s} {'value':>14s}")
    for key, value in figures.items():
        print(f"{key:42s} {value:>14}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
