"""GPU check of CONCH v1 extraction: one prepared script for a CUDA machine (DESIGN.md, performance targets).

On a real-pixel slide (mirrored CMU-1 tissue, JPEG-tiled like a scanned 20x slide; see benchlib.build_slide)
it measures, for each precision (bf16, fp16) and batch size (64–512):
- the encoder alone on ready tensors (patches already read, resized and normalised on the device), patches/s;
- the whole extract pipeline (``iter_batches``: reader threads → pinned uint8 batches → ``encode_slide``:
  copy, resize + normalise on the device, encoder, features back to the host), patches/s and its ratio to
  the encoder alone;
- the GPU busy fraction during that pipeline run: device time between CUDA events recorded around each
  batch's preprocessing + forward, over the run's wall time; plus NVML's utilisation when ``pynvml`` is
  installed;
and once: the reader alone (``iter_batches`` without an encoder) at 4–16 threads, patches/s; the cosine
between fp32 features and bf16 / fp16 features of the same real patches (≥ 0.999 expected).
Goals on an H200: ≥ 2,750 CONCH patches/s through the whole pipeline, encoder ≥ 90% busy.

Weights: ``--checkpoint`` (default ``synthetic:1``: CONCH's architecture with seeded random weights; speed
does not depend on the values). Pipeline patch counts repeat the slide's grid (readers keep ≤ 32 decoded tiles,
so every repeat is decoded again).

    python bench/gpu.py                         # on the CUDA machine (about 2 minutes)
    python bench/gpu.py --device cpu            # smoke test: tiny batches, a few patches
    python bench/gpu.py --device cpu --encoder tiny_test   # the fastest smoke test (what the test suite runs)

Prints a table, then as its last line one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch
from benchlib import build_slide, emit_json, grid_coords, print_table

GOAL_PATCHES_PER_SECOND = 2750  # H200, whole pipeline (DESIGN.md)
GOAL_BUSY_FRACTION = 0.90


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--encoder", default="conch_v1")
    parser.add_argument("--checkpoint", default=None, help="weights (default for conch_v1: synthetic:1)")
    parser.add_argument("--precisions", default=None, help="comma list (default: bf16,fp16 on CUDA; bf16 on CPU)")
    parser.add_argument("--batch-sizes", default=None, help="comma list (default: 64,128,256,512 on CUDA; 2 on CPU)")
    parser.add_argument("--threads", default=None, help="reader threads to try (default: 4,8,16 on CUDA; 1,2 on CPU)")
    parser.add_argument("--workers", type=int, default=None, help="reader threads of the pipeline runs "
                        "(default: the extract stage's auto value)")
    parser.add_argument("--patches", type=int, default=None, help="patches per pipeline run (4096 CUDA, 4 CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed encoder-alone batches (10 CUDA, 1 CPU)")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")

    def ints(text: str | None, default: str) -> list[int]:
        return [int(v) for v in (text or default).split(",")]

    args.precisions = (args.precisions or ("bf16,fp16" if cuda else "bf16")).split(",")
    args.batch_sizes = ints(args.batch_sizes, "64,128,256,512" if cuda else "2")
    args.threads = ints(args.threads, "4,8,16" if cuda else "1,2")
    args.patches = args.patches or (4096 if cuda else 4)
    args.steps = args.steps or (10 if cuda else 1)
    if args.checkpoint is None and args.encoder == "conch_v1":
        args.checkpoint = "synthetic:1"
    return args


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EventTimedEncoder:
    """Wraps an Encoder; records CUDA events around each batch's ``prepare_batch`` + forward, so the device
    time spent on batches can be summed (``busy_seconds``). On CPU it sums host wall time instead."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.cuda = encoder.device.type == "cuda"
        self.spans: list[tuple[object, object]] = []
        self._start: object = None

    def __getattr__(self, name: str):
        return getattr(self.encoder, name)

    def _mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def prepare_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        self._start = self._mark()
        return self.encoder.prepare_batch(pixels)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.encoder(x)
        self.spans.append((self._start, self._mark()))
        return out

    def busy_seconds(self) -> float:
        synchronize(self.encoder.device)
        if self.cuda:
            return sum(a.elapsed_time(b) for a, b in self.spans) / 1000
        return sum(b - a for a, b in self.spans)


class NvmlSampler:
    """Mean NVML GPU utilisation (0–1) sampled every 20 ms while running; None without ``pynvml``/CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._handle = None
        if device.type != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        except Exception:  # noqa: BLE001 - not installed or no driver access: CUDA events still measure
            self._handle = None

    def __enter__(self) -> NvmlSampler:
        if self._handle is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._handle is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.samples) / 100 if self.samples else None


def real_patches(grid, n: int) -> torch.Tensor:
    """uint8 [n, P, P, 3] real patches read from the slide (the first n of the grid)."""
    from slidemil.extract.patches import iter_batches

    return torch.cat([batch.pixels for batch in iter_batches(grid, n, 2, 0)])


def encoder_alone(encoder, pixels: torch.Tensor, batch: int, steps: int) -> tuple[float, float]:
    """patches/s of ``steps`` forwards of a ready [batch, 3, S, S] tensor, and peak device memory (GiB)."""
    x = encoder.prepare_batch(pixels[:batch].repeat(-(-batch // len(pixels)), 1, 1, 1)[:batch])
    if encoder.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(encoder.device)
    for _ in range(2 if encoder.device.type == "cuda" else 1):  # warm-up (kernel selection, allocator)
        encoder(x)
    synchronize(encoder.device)
    start = time.perf_counter()
    for _ in range(steps):
        encoder(x)
    synchronize(encoder.device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(encoder.device) / 2**30 if encoder.device.type == "cuda" else 0.0
    return batch * steps / seconds, peak


def pipeline(encoder, grid, batch: int, workers: int) -> dict[str, float | None]:
    """The extract pipeline over ``grid``: patches/s, GPU busy fraction (events), NVML utilisation."""
    from slidemil.extract.extraction import encode_slide
    from slidemil.extract.patches import iter_batches

    timed = EventTimedEncoder(encoder)
    cuda = encoder.device.type == "cuda"
    with NvmlSampler(encoder.device) as nvml:
        start = time.perf_counter()
        result = encode_slide(iter_batches(grid, batch, workers, 2, pin_memory=cuda), timed, encoder.embed_dim)
        synchronize(encoder.device)
        seconds = time.perf_counter() - start
    if len(result.features) != len(grid.coords):
        raise SystemExit(f"pipeline encoded {len(result.features)} of {len(grid.coords)} patches: {result.dropped[:3]}")
    return {"patches_per_second": len(grid.coords) / seconds, "busy_fraction": timed.busy_seconds() / seconds,
            "nvml_utilisation": nvml.mean}


def reader_alone(grid, batch: int, threads: int, pin: bool) -> float:
    """patches/s of ``iter_batches`` alone (read, decode, resize into pinned batches), no encoder."""
    from slidemil.extract.patches import iter_batches

    start = time.perf_counter()
    n = sum(len(b.indices) for b in iter_batches(grid, batch, threads, 2, pin_memory=pin))
    return n / (time.perf_counter() - start)


def cosine_to_fp32(encoder, pixels: torch.Tensor, precisions: list[str]) -> dict[str, tuple[float, float]]:
    """(min, mean) cosine between fp32 features and each precision's features of the same patches."""
    x = encoder.prepare_batch(pixels)
    encoder.precision = "fp32"
    reference = encoder(x)
    out = {}
    for precision in precisions:
        encoder.precision = precision
        cos = torch.nn.functional.cosine_similarity(reference, encoder(x), dim=1)
        out[precision] = (float(cos.min()), float(cos.mean()))
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from slidemil.extract.encoders import create_encoder
    from slidemil.extract.extraction import default_num_workers
    from slidemil.extract.patches import PatchGrid

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    skipped = [p for p in args.precisions if p == "fp16" and not cuda]  # fp16 autocast needs CUDA
    precisions = [p for p in args.precisions if p not in skipped]
    t0 = time.perf_counter()
    encoder = create_encoder(args.encoder, args.checkpoint, args.device, "fp32")
    figures: dict[str, object] = {
        "encoder": encoder.id, "weights": encoder.weights_sha256[:24], "device": args.device,
        "device_name": torch.cuda.get_device_name(device) if cuda else "cpu", "torch": torch.__version__,
        "encoder_build_seconds": time.perf_counter() - t0, "precisions_skipped": skipped,
    }
    workers = args.workers or default_num_workers(args.device)
    side_patches = 16 if cuda else 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        t0 = time.perf_counter()
        slide = build_slide(Path(tmp), side_patches * 512 + 100)
        figures["slide_build_seconds"] = time.perf_counter() - t0
        grid = PatchGrid(slide, grid_coords(side_patches, args.patches), 0, 512, 512)
        pixels = real_patches(PatchGrid(slide, grid_coords(side_patches, min(64, args.patches)), 0, 512, 512),
                              min(64, args.patches))
        for precision in precisions:
            encoder.precision = precision
            for batch in args.batch_sizes:
                alone, peak = encoder_alone(encoder, pixels, batch, args.steps)
                run = pipeline(encoder, grid, batch, workers)
                key = f"{precision}_b{batch}"
                figures[f"encoder_patches_per_second_{key}"] = alone
                figures[f"pipeline_patches_per_second_{key}"] = run["patches_per_second"]
                figures[f"pipeline_over_encoder_{key}"] = run["patches_per_second"] / alone
                figures[f"busy_fraction_{key}"] = run["busy_fraction"]
                figures[f"nvml_utilisation_{key}"] = run["nvml_utilisation"]
                figures[f"peak_memory_gib_{key}"] = peak
                nvml = run["nvml_utilisation"]
                rows.append((precision, batch, alone, run["patches_per_second"], run["patches_per_second"] / alone,
                             run["busy_fraction"], "n/a" if nvml is None else nvml, peak))
        reader_batch = max(args.batch_sizes)
        reader = {t: reader_alone(grid, reader_batch, t, cuda) for t in args.threads}
        cosines = cosine_to_fp32(encoder, pixels, precisions)
    for t, pps in reader.items():
        figures[f"reader_patches_per_second_{t}_threads"] = pps
    for precision, (low, mean) in cosines.items():
        figures[f"cosine_min_{precision}_vs_fp32"] = low
        figures[f"cosine_mean_{precision}_vs_fp32"] = mean
    best = max(rows, key=lambda r: r[3])
    figures.update({"pipeline_workers": workers, "pipeline_patches": args.patches,
                    "best_pipeline_patches_per_second": best[3], "best_pipeline_config": f"{best[0]}_b{best[1]}",
                    "best_pipeline_busy_fraction": best[5],
                    "meets_goal_pipeline_patches_per_second": best[3] >= GOAL_PATCHES_PER_SECOND,
                    "meets_goal_busy_fraction": best[5] >= GOAL_BUSY_FRACTION,
                    "meets_goal_cosine": all(low >= 0.999 for low, _ in cosines.values())})

    print(f"GPU check: {encoder.id} ({figures['weights']}) on {figures['device_name']}, torch {torch.__version__}; "
          f"pipeline: {args.patches} patches of 512 px from a real-pixel JPEG slide, {workers} reader threads")
    print_table(("precision", "batch", "encoder p/s", "pipeline p/s", "pipe/enc", "busy (events)", "NVML util",
                 "peak GiB"), rows)
    print()
    print_table(("reader threads", "patches/s"), [(t, pps) for t, pps in reader.items()])
    print()
    print_table(("precision", "cosine min vs fp32", "cosine mean"),
                [(p, low, mean) for p, (low, mean) in cosines.items()])
    print(f"goals (H200): pipeline ≥ {GOAL_PATCHES_PER_SECOND} p/s: {figures['meets_goal_pipeline_patches_per_second']}"
          f" (best {best[3]:.0f}, {figures['best_pipeline_config']}); busy ≥ {GOAL_BUSY_FRACTION:.0%}: "
          f"{figures['meets_goal_busy_fraction']}; cosine ≥ 0.999: {figures['meets_goal_cosine']}")
    emit_json(figures)


if __name__ == "__main__":
    main()
