"""Benchmark of the extract stage, side by side in one run (see DESIGN.md, performance targets).

On a synthetic JPEG-tiled slide built from real tissue (CMU-1, demo/real) it measures:
- reading: CPU ms per 512-px patch, JPEG-tile fast reader vs OpenSlide ``read_region`` (same pixels);
- preprocessing: CPU ms per patch, uint8 → ``prepare_batch`` (CONCH geometry: 448 px bicubic) on --device
  vs the CLAM/TRIDENT PIL chain (512 → PIL bicubic 448 → normalise), plus the cosine between the
  encoder's features from both paths;
- encoding: patches/s of the encoder alone on ready tensors vs the whole pipeline (read → encode);
- bag loading: a 10,000 x 512 float32 bag from the Zarr store vs HDF5 in CLAM's layout (32-row chunks)
  and TRIDENT's (one chunk per row).

Usage: python bench/extract.py [--encoder tiny_test] [--device cpu|cuda] [--patches 144]
Prints a readable table, then as its last line one JSON object with every figure and ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
TISSUE = REPO / "demo" / "real" / "wsi-aperio-svs" / "CMU-1-Small-Region.svs"


def build_slide(folder: Path, side: int) -> Path:
    """A side x side px JPEG-tiled (256 px, q90) TIFF at 0.5 µm/px made by mirroring the CMU-1 tissue."""
    import tifffile

    from slidemil.extract.slide import open_slide

    with open_slide(TISSUE) as slide:
        tissue = slide.read_region((0, 0), 0, slide.dimensions)
    reps = (-(-side // tissue.shape[0]), -(-side // tissue.shape[1]))
    rows = [np.concatenate([tissue if (i + j) % 2 == 0 else tissue[:, ::-1] for j in range(reps[1])], axis=1)
            for i in range(reps[0])]
    image = np.ascontiguousarray(np.concatenate(rows, axis=0)[:side, :side])
    path = folder / "bench_slide.tiff"
    tifffile.imwrite(path, image, tile=(256, 256), compression="jpeg", compressionargs={"level": 90}, resolution=(20000, 20000),
                     resolutionunit="CENTIMETER", metadata=None)
    return path


def cpu_ms(fn, n: int) -> float:
    t0 = time.process_time()
    fn()
    return (time.process_time() - t0) * 1000 / n


def wall(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_reading(path: Path, coords: np.ndarray) -> dict[str, float]:
    from slidemil.extract.fast_reader import open_jpeg_tiles
    from slidemil.extract.slide import open_slide

    with open_slide(path) as slide:
        ms_openslide = cpu_ms(lambda: [slide.read_region(tuple(c), 0, (512, 512)) for c in coords], len(coords))
    with open_slide(path) as slide:
        fast = open_jpeg_tiles(slide)
        ms_fast = cpu_ms(lambda: [fast.read(int(x), int(y), 0, 512, 512) for x, y in coords], len(coords))
        same = all(np.array_equal(fast.read(int(x), int(y), 0, 512, 512), slide.read_region((int(x), int(y)), 0, (512, 512)))
                   for x, y in coords[:8])
        fast.close()
    return {"reader_ms_per_patch": ms_fast, "openslide_ms_per_patch": ms_openslide,
            "reader_speedup_vs_openslide": ms_openslide / ms_fast, "reader_pixels_identical": same}


def bench_preprocess(path: Path, coords: np.ndarray, encoder, device: str) -> dict[str, float]:
    from PIL import Image

    from slidemil.extract.encoders.preprocess import (
        OPENAI_CLIP_MEAN,
        OPENAI_CLIP_STD,
        PilPreprocess,
        Preprocessing,
        prepare_batch,
    )
    from slidemil.extract.slide import open_slide

    with open_slide(path) as slide:
        patches = np.stack([slide.read_region((int(x), int(y)), 0, (512, 512)) for x, y in coords[:32]])
    spec = Preprocessing(448, "bicubic", OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)  # CONCH's geometry
    pil = PilPreprocess(spec)
    batch = torch.from_numpy(patches)
    if device.startswith("cuda"):
        batch = batch.pin_memory()

    def device_path():
        out = prepare_batch(batch, spec, device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    device_path()
    ms_device = cpu_ms(device_path, len(patches))
    ms_pil = cpu_ms(lambda: torch.stack([pil(Image.fromarray(p)) for p in patches]), len(patches))
    # features of the encoder through both of its own paths
    ref = encoder(torch.stack([encoder.preprocess(Image.fromarray(p)) for p in patches]).to(encoder.device))
    dev = encoder(encoder.prepare_batch(batch))
    cosine = torch.nn.functional.cosine_similarity(ref, dev, dim=1)
    return {"prepare_batch_cpu_ms_per_patch": ms_device, "pil_chain_cpu_ms_per_patch": ms_pil,
            "preprocess_cpu_ratio_pil_over_device": ms_pil / ms_device,
            "cosine_min_device_vs_pil_preprocess": float(cosine.min())}


def bench_encoding(path: Path, coords: np.ndarray, encoder, batch_size: int, workers: int) -> dict[str, float]:
    from slidemil.extract.extraction import encode_slide
    from slidemil.extract.patches import PatchGrid, iter_batches

    cuda = encoder.device.type == "cuda"
    x = encoder.prepare_batch(torch.zeros(batch_size, 512, 512, 3, dtype=torch.uint8))

    def encoder_only():
        for _ in range(max(1, len(coords) // batch_size)):
            encoder(x)
        if cuda:
            torch.cuda.synchronize()

    encoder_only()
    n = max(1, len(coords) // batch_size) * batch_size
    enc_pps = n / wall(encoder_only, 2)
    grid = PatchGrid(path, coords, 0, 512, 512)

    def pipeline():
        encode_slide(iter_batches(grid, batch_size, workers, 2, pin_memory=cuda), encoder, encoder.embed_dim)

    pipe_pps = len(coords) / wall(pipeline, 2)
    return {"encoder_only_patches_per_second": enc_pps, "pipeline_patches_per_second": pipe_pps,
            "pipeline_overhead_fraction": enc_pps / pipe_pps - 1.0}


def bench_bags(folder: Path) -> dict[str, float]:
    import h5py

    from slidemil.extract.store import FeatureStoreWriter, open_features

    rng = np.random.default_rng(0)
    features = rng.normal(size=(10_000, 512)).astype(np.float32)
    coords = rng.integers(0, 100_000, size=(10_000, 2))
    writer = FeatureStoreWriter(folder / "bench.zarr", "bench", "none", 512)
    with writer.lock("bag") as lock:
        writer.write_slide("bag", features, coords, {}, lock)
    store = open_features(folder / "bench.zarr")
    for name, chunk in (("clam", 32), ("trident", 1)):
        with h5py.File(folder / f"{name}.h5", "w") as f:
            f.create_dataset("features", data=features, chunks=(chunk, 512))
            f.create_dataset("coords", data=coords, chunks=(chunk, 2))

    def load_h5(name):
        with h5py.File(folder / f"{name}.h5", "r") as f:
            return f["features"][:], f["coords"][:]

    t_zarr = wall(lambda: store.load("bag"), 7)
    t_clam = wall(lambda: load_h5("clam"), 7)
    t_trident = wall(lambda: load_h5("trident"), 3)
    assert np.array_equal(store.load("bag")[0], load_h5("clam")[0])
    return {"bag_load_ms_zarr": t_zarr * 1000, "bag_load_ms_clam_h5": t_clam * 1000,
            "bag_load_ms_trident_h5": t_trident * 1000, "bag_load_speedup_vs_clam_h5": t_clam / t_zarr,
            "bag_load_speedup_vs_trident_h5": t_trident / t_zarr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="tiny_test")
    parser.add_argument("--checkpoint", default=None, help="weights (conch_v1 without one: synthetic:1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--patches", type=int, default=144, help="512-px patches read (a square grid)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()

    from slidemil.extract.encoders import create_encoder
    from slidemil.extract.extraction import default_batch_size, default_num_workers

    checkpoint = args.checkpoint or ("synthetic:1" if args.encoder == "conch_v1" else None)
    encoder = create_encoder(args.encoder, checkpoint, args.device, args.precision)
    side_patches = int(np.ceil(np.sqrt(args.patches)))
    batch = args.batch_size or default_batch_size(args.device)
    workers = args.workers or default_num_workers(args.device)
    results: dict[str, float | str | bool] = {"encoder": encoder.id, "device": args.device,
                                              "precision": encoder.precision, "batch_size": batch,
                                              "reader_threads": workers}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = build_slide(folder, side_patches * 512 + 100)
        coords = np.array([(50 + 512 * i, 50 + 512 * j) for j in range(side_patches) for i in range(side_patches)])
        coords = coords[: args.patches]
        results.update(bench_reading(path, coords))
        results.update(bench_preprocess(path, coords, encoder, args.device))
        results.update(bench_encoding(path, coords, encoder, batch, workers))
        results.update(bench_bags(folder))

    rows = [
        ("read 512-px patch (CPU ms)", "fast JPEG tiles", results["reader_ms_per_patch"],
         "OpenSlide read_region", results["openslide_ms_per_patch"], results["reader_speedup_vs_openslide"]),
        ("preprocess to 448 (CPU ms/patch)", f"prepare_batch on {args.device}", results["prepare_batch_cpu_ms_per_patch"],
         "PIL bicubic + normalise", results["pil_chain_cpu_ms_per_patch"], results["preprocess_cpu_ratio_pil_over_device"]),
        ("encode (patches/s)", "whole pipeline", results["pipeline_patches_per_second"],
         "encoder alone", results["encoder_only_patches_per_second"],
         results["pipeline_patches_per_second"] / results["encoder_only_patches_per_second"]),
        ("load 10k x 512 bag (ms)", "Zarr store", results["bag_load_ms_zarr"],
         "HDF5 CLAM (32-row chunks)", results["bag_load_ms_clam_h5"], results["bag_load_speedup_vs_clam_h5"]),
        ("load 10k x 512 bag (ms)", "Zarr store", results["bag_load_ms_zarr"],
         "HDF5 TRIDENT (1-row chunks)", results["bag_load_ms_trident_h5"], results["bag_load_speedup_vs_trident_h5"]),
    ]
    print(f"extract benchmark: encoder {encoder.id} ({encoder.precision}) on {args.device}, {len(coords)} patches, "
          f"batch {batch}, {workers} reader threads")
    print(f"{'measure':34} {'slidemil':28} {'value':>9}   {'baseline':28} {'value':>9}   {'ratio':>6}")
    for measure, ours, a, base, b, ratio in rows:
        print(f"{measure:34} {ours:28} {a:9.2f}   {base:28} {b:9.2f}   {ratio:6.2f}")
    print(f"pixels identical to OpenSlide: {results['reader_pixels_identical']}; cosine(device vs PIL preprocess) "
          f"min {results['cosine_min_device_vs_pil_preprocess']:.5f}")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in results.items()}))


if __name__ == "__main__":
    main()
