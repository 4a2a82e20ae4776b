"""Helpers shared by the ``bench/*.py`` scripts: a real-pixel test slide, best-of-N wall time, the table and
the last-line JSON every benchmark prints (DESIGN.md, performance targets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: Real H&E (OpenSlide test data CMU-1, CC0; see demo/real/wsi-aperio-svs/PROVENANCE.md), 2220 x 2967 px.
TISSUE = REPO / "demo" / "real" / "wsi-aperio-svs" / "CMU-1-Small-Region.svs"


def build_slide(folder: Path, side: int, name: str = "bench_slide.tiff") -> Path:
    """A ``side`` x ``side`` px JPEG-tiled (256 px, q90) TIFF at 0.5 µm/px made by mirroring the CMU-1 tissue.

    Every pixel is real tissue (mirrored copies of CMU-1-Small-Region), so JPEG decoding costs what it costs
    on a scanned slide. Returns the file's path (``folder / name``).
    """
    import tifffile

    from slidemil.extract.slide import open_slide

    with open_slide(TISSUE) as slide:  # only as much tissue as the slide needs
        tissue = slide.read_region((0, 0), 0, (min(side, slide.dimensions[0]), min(side, slide.dimensions[1])))
    reps = (-(-side // tissue.shape[0]), -(-side // tissue.shape[1]))
    rows = [np.concatenate([tissue if (i + j) % 2 == 0 else tissue[:, ::-1] for j in range(reps[1])], axis=1)
            for i in range(reps[0])]
    image = np.ascontiguousarray(np.concatenate(rows, axis=0)[:side, :side])
    path = folder / name
    tifffile.imwrite(path, image, tile=(256, 256), compression="jpeg", compressionargs={"level": 90},
                     resolution=(20000, 20000), resolutionunit="CENTIMETER", metadata=None, maxworkers=8)
    return path


def grid_coords(side_patches: int, n: int, patch: int = 512, offset: int = 50) -> np.ndarray:
    """int64 [n, 2] level-0 (x, y) of a ``side_patches``² grid of ``patch``-px patches, row-major, repeated
    as often as needed to give ``n`` rows (each repeat is decoded again: readers cache ≤ 32 tiles)."""
    one = np.array([(offset + patch * i, offset + patch * j) for j in range(side_patches) for i in range(side_patches)],
                   dtype=np.int64)
    return np.resize(one, (n, 2))


def wall(fn: Callable[[], object], repeat: int = 5) -> float:
    """Best wall-clock seconds of ``repeat`` calls of ``fn``."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print ``rows`` under ``header`` as aligned columns (floats with 2 decimals, or 4 below 1)."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.6f}" if abs(v) < 1 else f"{v:.2f}"
        return str(v)

    text = [[cell(v) for v in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in text) for i in range(len(header))]
    for r in text:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))


def emit_json(figures: dict) -> None:
    """Print ``figures`` as one JSON line (floats to 6 significant digits): the last line of every benchmark."""
    print(json.dumps({k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in figures.items()}))


# Runs argv[1:] in a child; prints the child's peak RSS (kB on Linux) and CPU seconds as the last line.
_WRAPPER = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(usage.ru_maxrss, usage.ru_utime + usage.ru_stime)
sys.exit(code)
"""


def run_measured(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Run ``argv`` in a fresh process under ``cwd``; returns (wall seconds, CPU seconds, peak RSS MiB).

    Raises:
        SystemExit: the command failed (its stderr tail is shown).
    """
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _WRAPPER, *argv], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{result.stderr[-3000:]}")
    rss_kb, cpu = result.stdout.strip().splitlines()[-1].split()
    return seconds, float(cpu), int(rss_kb) / 1024
