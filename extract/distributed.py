"""Running slide tasks: in-process, on a dask ``LocalCluster``, or on any dask scheduler (``tcp://host:8786``).

One task per slide (``extract.extraction.run_slide``); each worker builds the encoder once and writes only
the slide groups it computes (locks and atomic renames make concurrent writers safe). Results equal the
in-process run's: the same code encodes the same patches in the same order.

GPUs: a ``local`` cluster gets one worker process per visible GPU and each worker uses ``cuda:<its index>``;
on a remote cluster start one worker per GPU (e.g. dask-jobqueue with ``processes=1`` per GPU job, or
``dask cuda worker``), each seeing its own GPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from slidemil.extract.extraction import BUSY, ExtractionConfig, SlideJob, run_slide

_ENCODERS: dict[tuple[str, str, str, str], Any] = {}


def resolve_device(device: str, worker_index: int = 0) -> str:
    """``auto`` → ``cuda`` if available else ``cpu``; plain ``cuda`` on a multi-GPU host → ``cuda:<worker mod n>``."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and torch.cuda.device_count() > 1:
        device = f"cuda:{worker_index % torch.cuda.device_count()}"
    return device


def get_encoder(config: ExtractionConfig) -> Any:
    """The encoder of ``config`` (built once per process, cached). The first build also tunes glibc's
    malloc for extraction in this process (``extract.allocator``: batch-sized blocks reused, not remapped)."""
    from slidemil.extract.allocator import tune_glibc_malloc
    from slidemil.extract.encoders import create_encoder
    from slidemil.extract.stain import create_stain_normalizer

    key = (config.encoder, config.checkpoint, config.device, config.precision, config.stain_norm)
    if key not in _ENCODERS:
        if not _ENCODERS:
            tune_glibc_malloc()
        encoder = create_encoder(config.encoder, config.checkpoint, config.device, config.precision)
        encoder.stain_norm = create_stain_normalizer(*config.stain_norm)
        _ENCODERS[key] = encoder
    return _ENCODERS[key]


def run_jobs(
    jobs: Iterable[SlideJob],
    config: ExtractionConfig,
    scheduler: str = "none",
    n_workers: int = 2,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    on_patches: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every slide task and return the manifest rows (in ``jobs`` order).

    Slides locked by another writer are retried last, waiting for the lock, so that the returned rows
    are final (computed here, or up to date because the other writer finished them).

    Args:
        scheduler: ``none`` (in-process), ``local`` (``LocalCluster`` of ``n_workers`` processes; one per
            GPU on CUDA) or a scheduler address such as ``tcp://host:8786``.
        on_result: called with each final row as it arrives (progress, logging).
        on_patches: called with the number of patches after each batch (in-process only).
    """
    jobs = list(jobs)
    if scheduler == "none":
        rows = _run_in_process(jobs, config, on_result, on_patches)
    else:
        rows = _run_on_dask(jobs, config, scheduler, n_workers, on_result)
    order = {job.slide_id: i for i, job in enumerate(jobs)}
    return sorted(rows, key=lambda row: order[row["slide_id"]])


def _run_in_process(jobs: list[SlideJob], config: ExtractionConfig, on_result, on_patches) -> list[dict[str, Any]]:
    config = replace(config, device=resolve_device(config.device))
    encoder = get_encoder(config)
    rows, busy = [], []
    for wait in (False, True):
        for job in busy if wait else jobs:
            row = run_slide(job, config, encoder, wait_for_lock=wait, on_patches=on_patches)
            if row["status"] == BUSY:
                busy.append(job)
                continue
            rows.append(row)
            if on_result is not None:
                on_result(row)
    return rows


def _worker_task(job: SlideJob, config: ExtractionConfig, wait_for_lock: bool) -> dict[str, Any]:
    """Runs on a dask worker: resolve this worker's device, build/reuse the encoder, run the slide."""
    import torch
    from distributed import get_worker

    worker = get_worker()
    try:
        index = int(worker.name)
    except (TypeError, ValueError):
        index = 0
    threads = os.environ.get("SLIDEMIL_TORCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    config = replace(config, device=resolve_device(config.device, index))
    return run_slide(job, config, get_encoder(config), wait_for_lock=wait_for_lock)


def _run_on_dask(jobs: list[SlideJob], config: ExtractionConfig, scheduler: str, n_workers: int,
                 on_result) -> list[dict[str, Any]]:
    from distributed import Client, LocalCluster, as_completed

    if scheduler == "local":
        import torch

        gpus = torch.cuda.device_count() if config.device in ("auto", "cuda") else 0
        n = gpus or max(1, int(n_workers))
        cores = os.cpu_count() or 1
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
            env={"SLIDEMIL_TORCH_THREADS": str(max(1, cores // n))},
        )
        client = Client(cluster)
    else:
        cluster, client = None, Client(scheduler)
    rows = []
    try:
        futures = [client.submit(_worker_task, job, config, False, pure=False) for job in jobs]
        pending = as_completed(futures)
        for future in pending:
            row = future.result()
            if row["status"] == BUSY:
                job = next(j for j in jobs if j.slide_id == row["slide_id"])
                pending.add(client.submit(_worker_task, job, config, True, pure=False))
                continue
            rows.append(row)
            if on_result is not None:
                on_result(row)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return rows
