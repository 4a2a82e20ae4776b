"""Benchmark of `slidemil heatmap` on a 10,000-patch slide: slides per minute on CPU, and where the time goes.

A feature store holds one slide of ``--n-patches`` random 512-d features on a square grid laid over the real
CMU-1-Small-Region.svs (demo/real; the grid step shrinks so every patch lies on the slide), and
``--folds`` fold models of each head are random initialisations saved as train checkpoints. For each head
the stage's per-slide function (:func:`pipeline.stages.heatmap.draw_slide`: score the patches with every
fold model, read the thumbnail and the contact-sheet patches, draw every overlay PNG, the contact sheet and
the GeoJSON) runs ``--repeats`` times; the parts are timed on their own too. Prints a table, then as the
last line one JSON object with every figure.

    .venv/bin/python bench/heatmap.py [--n-patches 10000] [--folds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from slidemil.extract.store import FeatureStoreWriter, open_features
from slidemil.mil_models import create_mil_model
from slidemil.pipeline.ensemble import load_fold_models
from slidemil.pipeline.geojson import patch_collection
from slidemil.pipeline.heatmaps import heatmap_figure, patch_scores, read_slide
from slidemil.pipeline.stages.heatmap import HeatmapSection, draw_slide

SLIDE = Path(__file__).resolve().parents[1] / "demo/real/wsi-aperio-svs/CMU-1-Small-Region.svs"  # 2220 x 2967 px


def build(root: Path, n_patches: int, folds: int, heads: list[str], dim: int) -> tuple[object, int]:
    """The store with one slide and ``folds`` checkpoints per head under ``root/models``; returns (store, step)."""
    side = math.ceil(math.sqrt(n_patches))
    step = 2220 // side
    xy = np.stack(np.meshgrid(np.arange(side) * step, np.arange(side) * step), -1).reshape(-1, 2)[:n_patches]
    features = np.random.default_rng(0).normal(size=(n_patches, dim)).astype(np.float32)
    writer = FeatureStoreWriter(root / "bench.zarr", "bench", "random:0", dim)
    attrs = {"slide_path": str(SLIDE), "mpp": 0.499, "mpp_source": "aperio", "level": 0, "read_size": step,
             "patch_size": step, "patch_size_level0": step, "dimensions": [2220, 2967]}
    with writer.lock("slide") as lock:
        writer.write_slide("slide", features, xy.astype(np.int64), attrs, lock)
    for head in heads:
        for k in range(folds):
            torch.manual_seed(k)
            model = create_mil_model(head, in_dim=dim, n_classes=2)
            (root / "models" / head).mkdir(parents=True, exist_ok=True)
            torch.save({"head": head, "head_kwargs": {}, "in_dim": dim, "classes": ["a", "b"],
                        "state_dict": model.state_dict()}, root / "models" / head / f"fold-{k}.pt")
    return open_features(root / "bench.zarr"), step


def timed(fn, repeats: int) -> float:
    """Mean seconds of ``fn()`` over ``repeats`` calls."""
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def measure(head: str, store, root: Path, args: argparse.Namespace) -> tuple:
    """(head, whole slide s, scoring s, reading s, one overlay PNG s, PNGs per slide, GeoJSON s) of one head."""
    import matplotlib.pyplot as plt

    features, coords = store.load("slide")
    attrs = store.attrs("slide")
    section = HeatmapSection(top_k=8)
    models = load_fold_models(head, str(root / "models"))
    out = root / "out" / head
    draw_slide("slide", store, models, "a", section, out)  # warm-up (imports, caches)
    total = timed(lambda: draw_slide("slide", store, models, "a", section, out), args.repeats)
    score = timed(lambda: patch_scores([m.model for m in models], features), args.repeats)
    scores = patch_scores([m.model for m in models], features)
    values = scores.attention if scores.attention is not None else scores.class_scores[:, 0]
    read = timed(lambda: read_slide(attrs, coords, list(range(16)), section.thumbnail_size), args.repeats)
    pixels = read_slide(attrs, coords, [], section.thumbnail_size)

    def draw() -> None:
        fig = heatmap_figure(coords, values, attrs["patch_size_level0"], pixels.thumbnail, pixels.scale, attrs["mpp"],
                             "bench")
        fig.savefig(root / "draw.png", dpi=110)
        plt.close(fig)

    paint = timed(draw, args.repeats)
    geo = timed(lambda: json.dumps(patch_collection(coords, attrs["patch_size_level0"], {"attention": values},
                                                    attrs["dimensions"])), args.repeats)
    n_png = (scores.attention is not None) + (scores.class_scores.shape[1] if scores.class_scores is not None else 0)
    return head, total, score, read, paint, n_png, geo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-patches", type=int, default=10_000)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--heads", nargs="+", default=["abmil", "clam_sb"])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, float] = {"n_patches": args.n_patches, "folds": args.folds}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store, _ = build(root, args.n_patches, args.folds, args.heads, args.dim)
        for head in args.heads:
            rows.append(measure(head, store, root, args))
            name, total, score, read, paint, n_png, geo = rows[-1]
            results.update({f"{name}_seconds_per_slide": total, f"{name}_slides_per_minute": 60.0 / total,
                            f"{name}_score_seconds": score, f"{name}_read_seconds": read,
                            f"{name}_overlay_png_seconds": paint, f"{name}_overlay_pngs": n_png,
                            f"{name}_geojson_seconds": geo})
    print(f"{'head':<10}{'s/slide':>9}{'slides/min':>12}{'score s':>9}{'read s':>8}{'1 PNG s':>9}{'PNGs':>6}"
          f"{'GeoJSON s':>11}   ({args.n_patches} patches, {args.folds} fold models, {args.threads} threads)")
    for head, total, score, read, paint, n_png, geo in rows:
        print(f"{head:<10}{total:>9.2f}{60 / total:>12.1f}{score:>9.2f}{read:>8.2f}{paint:>9.2f}{n_png:>6}{geo:>11.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
