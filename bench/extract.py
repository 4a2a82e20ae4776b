"""Benchmark of the extract stage, side by side in one run (see DESIGN.md, performance targets).

On a synthetic JPEG-tiled slide built from real tissue (CMU-1, demo/real) it measures:
- reading: CPU ms per 512-px patch, JPEG-tile fast reader vs OpenSlide ``read_region`` (same pixels);
- preprocessing: CPU ms per patch, uint8 → ``prepare_batch`` (CONCH geometry: 448 px bicubic) on --device
  vs the CLAM/TRIDENT PIL chain (512 → PIL bicubic 448 → normalise), plus the cosine between the
  encoder's features from both paths;
- encoding: patches/s of the encoder alone on ready tensors vs the whole pipeline (read → encode);
- bag loading: a 10,000 x 512 float32 bag from the Zarr store vs CLAM's ``.pt`` (``torch.save`` of the
  tensor: what CLAM's MIL dataset loads by default), HDF5 in CLAM's layout (32-row chunks) and TRIDENT's (one
  chunk per row); then a multi-bag epoch (``--epoch-bags`` bags of 1,000–8,000 rows, random order) with the
  page cache warm and cold (evicted with ``posix_fadvise``), and the loading of a ``--epochs`` MIL training:
  slidemil's train stage reads each bag once, CLAM reads every bag's ``.pt`` every epoch.

Usage: python bench/extract.py [--encoder tiny_test] [--device cpu|cuda] [--patches 144] [--only bags,...]
Prints a readable table, then as its last line one JSON object with every figure and ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from benchlib import build_slide, emit_json, wall


def cpu_ms(fn, n: int) -> float:
    t0 = time.process_time()
    fn()
    return (time.process_time() - t0) * 1000 / n


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
    """patches/s of the encoder alone on ready tensors vs the whole pipeline (read → prepare → encode), best
    of 2 interleaved rounds; on CPU also the CPU seconds of each (steadier than wall time on a shared machine)."""
    from slidemil.extract.extraction import encode_slide
    from slidemil.extract.patches import PatchGrid, iter_batches

    cuda = encoder.device.type == "cuda"
    x = encoder.prepare_batch(torch.zeros(batch_size, 512, 512, 3, dtype=torch.uint8))
    steps = max(1, len(coords) // batch_size)
    grid = PatchGrid(path, coords, 0, 512, 512)
    cpu = {"encoder": float("inf"), "pipeline": float("inf")}

    def timed(name: str, fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            start = time.process_time()
            fn()
            if cuda:
                torch.cuda.synchronize()
            cpu[name] = min(cpu[name], time.process_time() - start)
        return run

    runs = {"encoder": timed("encoder", lambda: [encoder(x) for _ in range(steps)]),
            "pipeline": timed("pipeline", lambda: encode_slide(
                iter_batches(grid, batch_size, workers, 2, pin_memory=cuda), encoder, encoder.embed_dim))}
    runs["encoder"]()  # warm-up
    seconds = interleaved(runs, 2)
    enc_pps, pipe_pps = steps * batch_size / seconds["encoder"], len(coords) / seconds["pipeline"]
    out = {"encoder_only_patches_per_second": enc_pps, "pipeline_patches_per_second": pipe_pps,
           "pipeline_overhead_fraction": enc_pps / pipe_pps - 1.0}
    if not cuda:
        enc_ms, pipe_ms = cpu["encoder"] / (steps * batch_size) * 1000, cpu["pipeline"] / len(coords) * 1000
        out.update({"encoder_only_cpu_ms_per_patch": enc_ms, "pipeline_cpu_ms_per_patch": pipe_ms,
                    "pipeline_cpu_overhead_fraction": pipe_ms / enc_ms - 1.0})
    return out


def _evict(paths: list[Path]) -> None:
    """Drop the files' pages from the OS page cache (``posix_fadvise`` DONTNEED; no root needed)."""
    for path in paths:
        for file in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


class BagLayouts:
    """The same bags in three layouts: slidemil's Zarr store, CLAM's h5 (32-row chunks) and TRIDENT's h5
    (1-row chunks) with ``features`` + ``coords``, and CLAM's ``.pt`` (``torch.save`` of the [N, D] tensor,
    what CLAM's MIL dataset loads by default)."""

    def __init__(self, folder: Path, bags: dict[str, tuple[np.ndarray, np.ndarray]], h5_chunks=(("clam", 32),)):
        import h5py

        from slidemil.extract.store import FeatureStoreWriter, open_features

        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        writer = FeatureStoreWriter(folder / "bags.zarr", "bench", "none", 512)
        for sid, (features, coords) in bags.items():
            with writer.lock(sid) as lock:
                writer.write_slide(sid, features, coords, {}, lock)
            for name, chunk in h5_chunks:
                with h5py.File(folder / f"{sid}.{name}.h5", "w") as f:
                    f.create_dataset("features", data=features, chunks=(min(chunk, len(features)), 512))
                    f.create_dataset("coords", data=coords, chunks=(min(chunk, len(features)), 2))
            torch.save(torch.from_numpy(features), folder / f"{sid}.pt")
        self.store = open_features(folder / "bags.zarr")

    def load_zarr(self, sid: str):
        return self.store.load(sid)

    def load_zarr_features(self, sid: str):
        return self.store.load_features(sid)

    def load_h5(self, sid: str, name: str = "clam"):
        import h5py

        with h5py.File(self.folder / f"{sid}.{name}.h5", "r") as f:
            return f["features"][:], f["coords"][:]

    def load_pt(self, sid: str):
        return torch.load(self.folder / f"{sid}.pt")

    def evict(self) -> None:
        _evict([self.folder])


def interleaved(runs: dict[str, Callable[[], object]], rounds: int,
                before: Callable[[], None] | None = None) -> dict[str, float]:
    """Best wall seconds of each run over ``rounds`` rounds that take turns (run A, B, C, A, B, C, …), so a
    busy machine slows every layout alike; ``before`` is called before each run (e.g. evict the page cache)."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            if before is not None:
                before()
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def bench_bags(folder: Path, n_epoch_bags: int, epochs: int) -> dict[str, float]:
    """One 10,000 x 512 bag per layout (best of 7, page cache warm), then a multi-bag epoch: ``n_epoch_bags``
    bags of 1,000–8,000 x 512 in a random order, warm and cold (page cache evicted), per layout.
    Each layout loads what its trainer loads: Zarr and h5 features + coords, CLAM's .pt the features; and the
    Zarr features alone (what slidemil's probes, zero-shot and deploy read)."""
    rng = np.random.default_rng(0)
    one = BagLayouts(folder / "one", {"bag": (rng.normal(size=(10_000, 512)).astype(np.float32),
                                              rng.integers(0, 100_000, size=(10_000, 2)))},
                     (("clam", 32), ("trident", 1)))
    assert np.array_equal(one.load_zarr("bag")[0], one.load_h5("bag")[0])
    assert np.array_equal(one.load_zarr("bag")[0], one.load_pt("bag").numpy())
    t = interleaved({"zarr": lambda: one.load_zarr("bag"), "zarr_features": lambda: one.load_zarr_features("bag"),
                     "clam_pt": lambda: one.load_pt("bag"), "clam_h5": lambda: one.load_h5("bag")}, 11)
    t["trident_h5"] = wall(lambda: one.load_h5("bag", "trident"), 3)
    out = {f"bag_load_ms_{k}": v * 1000 for k, v in t.items()}
    out.update({f"bag_load_speedup_vs_{k}": t[k] / t["zarr"] for k in ("clam_pt", "clam_h5", "trident_h5")})
    out["bag_load_speedup_features_only_vs_clam_pt"] = t["clam_pt"] / t["zarr_features"]

    sizes = rng.integers(1_000, 8_001, size=n_epoch_bags)
    bags = {f"s{i:03d}": (rng.normal(size=(n, 512)).astype(np.float32), rng.integers(0, 100_000, size=(n, 2)))
            for i, n in enumerate(sizes)}
    many = BagLayouts(folder / "many", bags)
    order = list(rng.permutation(list(bags)))
    loaders = {"zarr": many.load_zarr, "zarr_features": many.load_zarr_features, "clam_pt": many.load_pt,
               "clam_h5": many.load_h5}
    for cache, rounds in (("warm", 3), ("cold", 2)):
        epochs_of = {name: (lambda load=load: [load(sid) for sid in order]) for name, load in loaders.items()}
        seconds = interleaved(epochs_of, rounds, many.evict if cache == "cold" else None)
        for name in loaders:
            out[f"epoch_read_seconds_{cache}_{name}"] = seconds[name]
        for name in ("clam_pt", "clam_h5"):
            out[f"epoch_read_speedup_{cache}_vs_{name}"] = seconds[name] / seconds["zarr"]
        out[f"epoch_read_speedup_{cache}_features_only_vs_clam_pt"] = seconds["clam_pt"] / seconds["zarr_features"]
    # slidemil's train stage reads every bag once per stage (pipeline/stages/train.py `_load_bags`) and trains
    # all folds and epochs from RAM; CLAM's MIL dataset reads each bag's .pt in __getitem__, every epoch.
    out["epoch_bags"] = n_epoch_bags
    out["epoch_instances"] = int(sizes.sum())
    out["epoch_mb"] = float(sizes.sum()) * 512 * 4 / 2**20
    out[f"loading_seconds_{epochs}_epochs_slidemil"] = out["epoch_read_seconds_cold_zarr"]
    out[f"loading_seconds_{epochs}_epochs_clam_pt"] = (out["epoch_read_seconds_cold_clam_pt"]
                                                      + (epochs - 1) * out["epoch_read_seconds_warm_clam_pt"])
    out[f"loading_speedup_{epochs}_epochs_vs_clam_pt"] = (out[f"loading_seconds_{epochs}_epochs_clam_pt"]
                                                         / out[f"loading_seconds_{epochs}_epochs_slidemil"])
    return out


SECTIONS = ("reading", "preprocess", "encoding", "bags")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="tiny_test")
    parser.add_argument("--checkpoint", default=None,
                        help="weights (default: synthetic:1 for conch_v1, random:0 for the timm-based encoders)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--patches", type=int, default=144, help="512-px patches read (a square grid)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--epoch-bags", type=int, default=48, help="bags of the multi-bag epoch read")
    parser.add_argument("--epochs", type=int, default=20, help="MIL epochs of the loading-per-training figure")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    args = parser.parse_args()
    only = set(args.only.split(","))

    from slidemil.extract.encoders import create_encoder
    from slidemil.extract.extraction import default_batch_size, default_num_workers

    checkpoint = args.checkpoint or ("synthetic:1" if args.encoder == "conch_v1" else
                                     None if args.encoder == "tiny_test" else "random:0")
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
        if "reading" in only:
            results.update(bench_reading(path, coords))
        if "preprocess" in only:
            results.update(bench_preprocess(path, coords, encoder, args.device))
        if "encoding" in only:
            results.update(bench_encoding(path, coords, encoder, batch, workers))
        if "bags" in only:
            results.update(bench_bags(folder, args.epoch_bags, args.epochs))

    r = results
    rows = []
    if "reading" in only:
        rows.append(("read 512-px patch (CPU ms)", "fast JPEG tiles", r["reader_ms_per_patch"],
                     "OpenSlide read_region", r["openslide_ms_per_patch"], r["reader_speedup_vs_openslide"]))
    if "preprocess" in only:
        rows.append(("preprocess to 448 (CPU ms/patch)", f"prepare_batch on {args.device}",
                     r["prepare_batch_cpu_ms_per_patch"], "PIL bicubic + normalise", r["pil_chain_cpu_ms_per_patch"],
                     r["preprocess_cpu_ratio_pil_over_device"]))
    if "encoding" in only:
        rows.append(("encode (patches/s)", "whole pipeline", r["pipeline_patches_per_second"], "encoder alone",
                     r["encoder_only_patches_per_second"],
                     r["pipeline_patches_per_second"] / r["encoder_only_patches_per_second"]))
        if "pipeline_cpu_ms_per_patch" in r:
            rows.append(("encode (CPU ms/patch)", "whole pipeline", r["pipeline_cpu_ms_per_patch"], "encoder alone",
                         r["encoder_only_cpu_ms_per_patch"],
                         r["encoder_only_cpu_ms_per_patch"] / r["pipeline_cpu_ms_per_patch"]))
    if "bags" in only:
        for key, label in (("clam_pt", "CLAM .pt (torch.save)"), ("clam_h5", "HDF5 CLAM (32-row chunks)"),
                           ("trident_h5", "HDF5 TRIDENT (1-row chunks)")):
            rows.append(("load 10k x 512 bag (ms)", "Zarr store", r["bag_load_ms_zarr"], label,
                         r[f"bag_load_ms_{key}"], r[f"bag_load_speedup_vs_{key}"]))
        rows.append(("load 10k x 512 bag (ms)", "Zarr, features only", r["bag_load_ms_zarr_features"],
                     "CLAM .pt (torch.save)", r["bag_load_ms_clam_pt"], r["bag_load_speedup_features_only_vs_clam_pt"]))
        for cache in ("warm", "cold"):
            for key, label in (("clam_pt", "CLAM .pt"), ("clam_h5", "HDF5 CLAM")):
                rows.append((f"epoch read, {r['epoch_bags']} bags, {cache} (s)", "Zarr store",
                             r[f"epoch_read_seconds_{cache}_zarr"], label, r[f"epoch_read_seconds_{cache}_{key}"],
                             r[f"epoch_read_speedup_{cache}_vs_{key}"]))
            rows.append((f"epoch read, {r['epoch_bags']} bags, {cache} (s)", "Zarr, features only",
                         r[f"epoch_read_seconds_{cache}_zarr_features"], "CLAM .pt",
                         r[f"epoch_read_seconds_{cache}_clam_pt"], r[f"epoch_read_speedup_{cache}_features_only_vs_clam_pt"]))
        e = args.epochs
        rows.append((f"bag loading, {e} MIL epochs (s)", "read once (train stage)", r[f"loading_seconds_{e}_epochs_slidemil"],
                     "CLAM .pt every epoch", r[f"loading_seconds_{e}_epochs_clam_pt"],
                     r[f"loading_speedup_{e}_epochs_vs_clam_pt"]))
    print(f"extract benchmark: encoder {encoder.id} ({encoder.precision}) on {args.device}, {len(coords)} patches, "
          f"batch {batch}, {workers} reader threads")
    print(f"{'measure':36} {'slidemil':24} {'value':>9}   {'baseline':28} {'value':>9}   {'ratio':>6}")
    for measure, ours, a, base, b, ratio in rows:
        print(f"{measure:36} {ours:24} {a:9.3f}   {base:28} {b:9.3f}   {ratio:6.2f}")
    if "reading" in only and "preprocess" in only:
        print(f"pixels identical to OpenSlide: {r['reader_pixels_identical']}; cosine(device vs PIL preprocess) "
              f"min {r['cosine_min_device_vs_pil_preprocess']:.5f}")
    emit_json(results)


if __name__ == "__main__":
    main()
