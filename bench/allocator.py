"""Benchmark of the memory allocator under the extraction process: glibc defaults vs tuned glibc vs mimalloc.

Each configuration runs the same extraction (``iter_batches`` reader threads → ``encode_slide``) over the
patches of a real-pixel JPEG slide (benchlib.build_slide) in a fresh process, rounds taking turns:
- ``glibc``: the defaults. Every batch buffer, resized tensor and activation above glibc's mmap threshold
  is a fresh ``mmap``; its pages are faulted in and zeroed by the kernel each time (system time);
- ``glibc_tuned``: ``MALLOC_MMAP_MAX_=0`` (no mmap: large blocks come from the heap and are reused) and
  ``MALLOC_TRIM_THRESHOLD_`` = 1 GiB (freed heap memory is kept for the next batch);
- ``glibc_mallopt``: the same two settings made by the process itself at start-up through ``mallopt``
  (``slidemil.extract.allocator``: what the extract stage does);
- ``mimalloc``: Microsoft's mimalloc preloaded (``LD_PRELOAD``), when ``--mimalloc PATH`` is given
  (e.g. from ``pip install cmeel-mimalloc``).
Figures per configuration: wall, user and system CPU seconds, peak RSS (``ru_maxrss`` of the child), and
their ratios to glibc's defaults.

    .venv/bin/python bench/allocator.py [--encoder tiny_test] [--patches 256] [--rounds 3] [--mimalloc PATH]

Prints a table, then as its last line one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import build_slide, emit_json, print_table

SIDE_PATCHES = 6

# The child: build the encoder, run the pipeline over the grid, print user/system seconds and peak RSS.
_CHILD = """
import resource, sys, time
sys.path.insert(0, sys.argv[1])
if sys.argv[6] == "1":
    from slidemil.extract.allocator import tune_glibc_malloc
    tune_glibc_malloc()
from benchlib import grid_coords
from slidemil.extract.encoders import create_encoder
from slidemil.extract.extraction import encode_slide
from slidemil.extract.patches import PatchGrid, iter_batches
checkpoint = None if sys.argv[3] == "tiny_test" else "random:0"
encoder = create_encoder(sys.argv[3], checkpoint, "cpu", "fp32")
grid = PatchGrid(sys.argv[2], grid_coords(int(sys.argv[5]), int(sys.argv[4])), 0, 512, 512)
before = resource.getrusage(resource.RUSAGE_SELF)
start = time.perf_counter()
encode_slide(iter_batches(grid, 16, 2, 2), encoder, encoder.embed_dim)
wall = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF)
print(wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime, after.ru_maxrss / 1024)
"""

TUNED_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**30)}


def run_child(slide: Path, encoder: str, patches: int, env: dict[str, str], mallopt: bool) -> list[float]:
    """(wall s, user s, system s, peak RSS MiB) of one extraction in a fresh process."""
    argv = [sys.executable, "-c", _CHILD, str(Path(__file__).resolve().parent), str(slide), encoder, str(patches),
            str(SIDE_PATCHES), "1" if mallopt else "0"]
    result = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **env})
    if result.returncode:
        raise SystemExit(f"extraction child failed:\n{result.stderr[-3000:]}")
    return [float(v) for v in result.stdout.strip().splitlines()[-1].split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="tiny_test")
    parser.add_argument("--patches", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mimalloc", type=Path, default=None, help="libmimalloc.so to preload")
    args = parser.parse_args()
    configs: dict[str, tuple[dict[str, str], bool]] = {
        "glibc": ({}, False), "glibc_tuned": (TUNED_ENV, False), "glibc_mallopt": ({}, True)}
    if args.mimalloc:
        configs["mimalloc"] = ({"LD_PRELOAD": str(args.mimalloc)}, False)
    best: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-allocator-") as tmp:
        slide = build_slide(Path(tmp), SIDE_PATCHES * 512 + 100)
        for _ in range(args.rounds):
            for name, (env, mallopt) in configs.items():
                run = run_child(slide, args.encoder, args.patches, env, mallopt)
                # best wall/user/system over the rounds; the largest peak RSS
                best[name] = run if name not in best else [*map(min, best[name][:3], run[:3]), max(best[name][3], run[3])]
    base = best["glibc"]
    figures: dict[str, object] = {"encoder": args.encoder, "patches": args.patches, "rounds": args.rounds}
    rows = []
    for name, (wall, user, system, rss) in best.items():
        figures.update({f"wall_seconds_{name}": wall, f"user_seconds_{name}": user, f"system_seconds_{name}": system,
                        f"peak_rss_mb_{name}": rss})
        if name != "glibc":
            figures.update({f"wall_ratio_{name}_over_glibc": wall / base[0],
                            f"cpu_ratio_{name}_over_glibc": (user + system) / (base[1] + base[2]),
                            f"peak_rss_mb_delta_{name}": rss - base[3]})
        rows.append((name, wall, user, system, rss, wall / base[0], (user + system) / (base[1] + base[2])))
    print(f"extraction of {args.patches} patches with {args.encoder} on CPU, fresh process per run, "
          f"best of {args.rounds} rounds taking turns")
    print_table(("allocator", "wall s", "user s", "system s", "peak RSS MiB", "wall ratio", "CPU ratio"), rows)
    emit_json(figures)


if __name__ == "__main__":
    main()
