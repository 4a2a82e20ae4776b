"""Parallel, prefetching patch reading for one slide: uint8 batches ready for the encoder's device.

Reader threads (the JPEG decoder, OpenSlide and OpenCV release the GIL) each hold their own slide handle
(and fast JPEG-tile reader) and fill a contiguous run of a batch's rows straight into the batch buffer,
which lives in pinned memory when it goes to a CUDA device. Up to ``prefetch`` batches are read ahead, so
the device does not wait on reading when there are enough cores. Threads rather than DataLoader worker
processes: no process start-up per slide, no inter-process copy of the pixels.

A patch whose pixels cannot be decoded is retried once after reopening that thread's handle; if it still
fails it is reported in ``PatchBatch.errors`` and flagged in ``PatchBatch.ok`` (its row is white).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from slidemil.extract.fast_reader import open_jpeg_tiles
from slidemil.extract.slide import PatchReadError, Slide, open_slide, resize
from slidemil.extract.slide import log as slide_log


@dataclass(frozen=True)
class PatchGrid:
    """Where a slide's patches are: its file, the tiles' level geometry and level-0 coords [N, 2] (x, y)."""

    slide_path: Path
    coords: np.ndarray
    level: int
    read_size: int
    patch_size: int
    mpp_override: float | None = None
    fast: bool = True


@dataclass
class PatchBatch:
    """One batch of patches.

    Attributes:
        pixels: uint8 [B, P, P, 3] RGB (pinned when reading for CUDA).
        indices: int64 [B] rows of the slide's coords.
        ok: bool [B]; False where the patch could not be read (row is white, see ``errors``).
        errors: (row index, reason) of the unreadable patches.
        seconds_read: reader-thread seconds spent on this batch (summed over threads).
    """

    pixels: torch.Tensor
    indices: np.ndarray
    ok: np.ndarray
    errors: list[tuple[int, str]] = field(default_factory=list)
    seconds_read: float = 0.0


class PatchReader:
    """One thread's reader: a slide handle plus the JPEG-tile fast path where it applies."""

    def __init__(self, grid: PatchGrid) -> None:
        self.grid = grid
        self.slide: Slide = open_slide(grid.slide_path, grid.mpp_override)
        self.fast = open_jpeg_tiles(self.slide) if grid.fast else None

    def read(self, x: int, y: int) -> np.ndarray:
        """uint8 [P, P, 3] patch at level-0 (x, y); retried once after reopening on a read error.

        Raises:
            PatchReadError: the pixels cannot be decoded even after reopening the slide.
        """
        try:
            return self._read(x, y)
        except PatchReadError:
            self.reopen()
            return self._read(x, y, fast=False)

    def _read(self, x: int, y: int, fast: bool = True) -> np.ndarray:
        g = self.grid
        if fast and self.fast is not None and self.fast.can_read(x, y, g.level):
            try:
                pixels = self.fast.read(x, y, g.level, g.read_size, g.read_size)
            except Exception:  # noqa: BLE001 - any decoder failure: let the general path decide
                pixels = self.slide.read_region((x, y), g.level, (g.read_size, g.read_size))
        else:
            pixels = self.slide.read_region((x, y), g.level, (g.read_size, g.read_size))
        return resize(pixels, g.patch_size, g.patch_size)

    def reopen(self) -> None:
        self.slide.reopen()

    def close(self) -> None:
        if self.fast is not None:
            self.fast.close()
        self.slide.close()


def iter_batches(
    grid: PatchGrid,
    batch_size: int,
    num_workers: int = 2,
    prefetch: int = 2,
    pin_memory: bool = False,
) -> Iterator[PatchBatch]:
    """Yield the slide's patches in tile order as ``PatchBatch``es, reading ``prefetch`` batches ahead.

    Args:
        grid: the slide and its patch coords.
        batch_size: patches per batch (the last one may be smaller).
        num_workers: reader threads, each with its own slide handle.
        prefetch: batches read ahead of the one being consumed.
        pin_memory: allocate batch buffers in page-locked memory (for asynchronous copies to CUDA).

    Raises:
        SlideError: the slide cannot be opened.
    """
    n = len(grid.coords)
    if n == 0:
        return
    num_workers = max(1, int(num_workers))
    local = threading.local()
    readers: list[PatchReader] = []
    lock = threading.Lock()

    def reader() -> PatchReader:
        if not hasattr(local, "reader"):
            local.reader = PatchReader(grid)
            with lock:
                readers.append(local.reader)
        return local.reader

    def fill(buffer: np.ndarray, start: int, rows: range) -> tuple[list[tuple[int, str]], float]:
        t0 = time.perf_counter()
        errors = []
        r = reader()
        for i in rows:
            x, y = (int(v) for v in grid.coords[i])
            try:
                buffer[i - start] = r.read(x, y)
            except PatchReadError as exc:
                buffer[i - start] = 255
                errors.append((i, str(exc)))
        return errors, time.perf_counter() - t0

    def submit(pool: ThreadPoolExecutor, start: int) -> tuple[int, torch.Tensor, list[Future]]:
        stop = min(start + batch_size, n)
        size = grid.patch_size
        pixels = torch.empty((stop - start, size, size, 3), dtype=torch.uint8, pin_memory=pin_memory)
        buffer = pixels.numpy()
        step = -(-(stop - start) // num_workers)
        futures = [pool.submit(fill, buffer, start, range(a, min(a + step, stop))) for a in range(start, stop, step)]
        return start, pixels, futures

    # One slide handle per thread: the first task a thread runs opens it. Each open checks the slide's
    # levels and may warn about the same level (extract.slide); the reader threads log each warning once.
    once = _OncePerMessage()
    slide_log.addFilter(once)
    pool = ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="patch-reader")
    starts = iter(range(0, n, batch_size))
    try:
        pending: deque = deque(submit(pool, s) for _, s in zip(range(prefetch + 1), starts, strict=False))
        while pending:
            start, pixels, futures = pending.popleft()
            errors: list[tuple[int, str]] = []
            seconds = 0.0
            for future in futures:
                errs, secs = future.result()
                errors += errs
                seconds += secs
            next_start = next(starts, None)
            if next_start is not None:
                pending.append(submit(pool, next_start))
            ok = np.ones(len(pixels), dtype=bool)
            ok[[i - start for i, _ in errors]] = False
            yield PatchBatch(pixels, np.arange(start, start + len(pixels)), ok, errors, seconds)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for r in readers:
            r.close()
        slide_log.removeFilter(once)


class _OncePerMessage(logging.Filter):
    """A logging filter that lets each distinct message through once, whichever thread logs it."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        with self._lock:
            if message in self._seen:
                return False
            self._seen.add(message)
            return True
