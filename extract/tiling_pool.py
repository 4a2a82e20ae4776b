"""Tiling many slides: :func:`~slidemil.extract.tiling.tile_slide` over a cohort, in worker processes.

Tiling is CPU-bound per slide (decoding, the tissue mask, PNG encoding) and slides are independent, so
``tile.workers`` processes each tile one slide at a time and send back the :class:`TileResult` (coordinates
and QC PNG bytes: small); the caller writes the stores. A slide's error becomes its failure reason; a
worker that dies (a crash inside a C slide reader on a damaged file) does not stop the cohort: the slides it
may have been reading are tiled again one per process, so only the culprit fails, named.

``concurrent.futures`` with the ``fork`` start method on Linux (workers inherit the imported modules, so
they start in milliseconds; the parent has opened no slide before the pool starts), ``spawn`` elsewhere.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

# what tile_slide imports, imported once here before the workers fork instead of once in each worker
from slidemil.core.errors import SlideError
from slidemil.extract import grid, levels, qc, slide, tissue  # noqa: F401
from slidemil.extract.sections import TileSection
from slidemil.extract.tiling import TileResult, tile_slide

log = logging.getLogger("slidemil.tile")

MAX_AUTO_WORKERS = 8
CRASH_REASON = ("the tiling process died while reading this slide (a crash in the slide reader, usually a "
                "damaged or unsupported file); check it with openslide-show-properties or re-export it")


@dataclass(frozen=True)
class SlideJob:
    """One slide to tile: ``slide_id``, its file and the level-0 µm/px override from the cohort (or None)."""

    slide_id: str
    path: Path
    mpp_override: float | None = None

    @classmethod
    def of(cls, slide_id: str, path: str | Path, mpp: float | None) -> SlideJob:
        """The job of a cohort row: its ``mpp`` cell (NaN or None when blank) as the override."""
        return cls(slide_id, Path(path), None if mpp is None or math.isnan(mpp) else float(mpp))


@dataclass(frozen=True)
class TileOutcome:
    """What tiling one slide gave: its :class:`TileResult`, or None and the ``reason`` it failed; ``seconds``
    of wall time in the worker."""

    job: SlideJob
    result: TileResult | None
    reason: str
    seconds: float


def resolve_workers(workers: int | str, n_slides: int) -> int:
    """Processes for ``tile.workers`` (``auto``: the CPU cores this process may use, at most 8) and
    ``n_slides`` slides (never more processes than slides; ≥ 1)."""
    if workers == "auto":
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        workers = min(cores, MAX_AUTO_WORKERS)
    return max(1, min(int(workers), n_slides))


def tile_one_slide(job: SlideJob, config: TileSection) -> TileOutcome:
    """Tile ``job`` with ``config``; never raises for a problem of the slide (it becomes the reason)."""
    start = time.perf_counter()
    result, reason = None, ""
    try:
        if not job.path.is_file():
            raise SlideError(f"{job.path}: slide file not found; check the `path` column of the cohort table")
        result = tile_slide(job.path, config, job.mpp_override)
    except SlideError as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 — per-slide isolation: a bug on one slide must not stop the cohort
        reason = f"internal error ({type(exc).__name__}: {exc}); please report it with the log"
        log.exception("slide %s: unexpected error", job.slide_id)
    return TileOutcome(job, result, reason, round(time.perf_counter() - start, 3))


def tile_slides(jobs: Sequence[SlideJob], config: TileSection, workers: int) -> Iterator[TileOutcome]:
    """Tile every job, yielding each outcome as it finishes (in completion order when ``workers`` > 1).

    ``workers`` ≤ 1 or a single job: in this process. When a worker process dies, the slides that were being
    tiled then are tiled again each in a process of its own (so a slide that crashes the reader fails alone,
    named) and the slides not yet started go on in a new pool of ``workers``. Stopping the iteration (or
    Ctrl-C) cancels the slides not started and waits for those in progress (seconds).
    """
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield tile_one_slide(job, config)
        return
    todo = list(jobs)
    while todo:
        in_flight, not_started = yield from _pooled(todo, config, workers)
        if in_flight:
            log.warning("a tiling process died while tiling %s; tiling %s again one per process, the other %d "
                        "slide(s) go on in parallel", ", ".join(j.slide_id for j in in_flight),
                        "it" if len(in_flight) == 1 else "them", len(not_started))
        for job in in_flight:
            died, never_started = yield from _pooled([job], config, 1)
            if died or never_started:  # alone in its process and it died again: this slide is the culprit
                yield TileOutcome(job, None, CRASH_REASON, 0.0)
        todo = not_started


def _pooled(jobs: Sequence[SlideJob], config: TileSection,
            workers: int) -> Generator[TileOutcome, None, tuple[list[SlideJob], list[SlideJob]]]:
    """Tile ``jobs`` in a pool of ``workers`` processes until they are done or a worker dies; yields the
    outcomes and returns the jobs lost to a dying worker as ``(in_flight, not_started)``: those that had
    started and not finished, and the others."""
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    started = context.SimpleQueue()  # slide_ids, put by a worker as it starts one
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(started,))
    in_flight: list[SlideJob] = []
    not_started: list[SlideJob] = []
    try:
        pending: dict[Future, SlideJob] = {pool.submit(_run, job, config): job for job in jobs}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            broken = False
            for future in done:
                job = pending.pop(future)
                try:
                    yield future.result()
                except BrokenProcessPool:
                    pending[future] = job
                    broken = True
            if broken:
                for future in [f for f in pending if f.done() and f.exception() is None]:  # finished meanwhile
                    yield future.result()
                    del pending[future]
                break
        began = set()
        while pending and not started.empty():
            began.add(started.get())
        for job in pending.values():
            (in_flight if job.slide_id in began else not_started).append(job)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return in_flight, not_started


_started = None  # in a worker: the queue of slide_ids started (set by _init_worker)


def _init_worker(started) -> None:
    """Workers leave Ctrl-C to the parent, which cancels the pool and reports once; they say which slide they
    start on ``started``."""
    global _started
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _started = started


def _run(job: SlideJob, config: TileSection) -> TileOutcome:
    """:func:`tile_one_slide` in a worker, announced on the started queue first."""
    _started.put(job.slide_id)
    return tile_one_slide(job, config)
