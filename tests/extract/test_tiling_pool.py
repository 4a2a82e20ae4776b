"""tile_slides: a cohort tiled in worker processes gives what one process gives, and a slide that kills its
process fails alone."""

import faulthandler
import logging
import os
import signal
import sys

import numpy as np
import pytest

from slidemil.extract import tiling_pool
from slidemil.extract.sections import TileSection
from slidemil.extract.tiling_pool import CRASH_REASON, SlideJob, resolve_workers, tile_slides

CONFIG = TileSection(patch_size=256)


@pytest.fixture(scope="module")
def jobs(real_data):
    svs = real_data / "wsi-aperio-svs" / "CMU-1-Small-Region.svs"
    pyramid = real_data / "wsi-derived-cmu1" / "CMU-1-Small-Region.pyramid.tiff"
    ome = real_data / "wsi-ome-tiff-he" / "OS-1-detail.ome.tif"
    return [SlideJob("svs", svs), SlideJob("pyramid", pyramid), SlideJob("ome", ome, 0.5),
            SlideJob("missing", svs.with_name("missing.svs")), SlideJob("svs-coarse", svs, 1.0)]


def test_workers_give_what_one_process_gives(jobs):
    serial = {o.job.slide_id: o for o in tile_slides(jobs, CONFIG, workers=1)}
    pooled = list(tile_slides(jobs, CONFIG, workers=2))
    assert sorted(o.job.slide_id for o in pooled) == sorted(serial)
    for outcome in pooled:
        expected = serial[outcome.job.slide_id]
        assert outcome.reason == expected.reason
        if expected.result is None:
            assert outcome.result is None
            continue
        assert np.array_equal(outcome.result.coords, expected.result.coords)
        assert np.array_equal(outcome.result.tissue_fraction, expected.result.tissue_fraction)
        assert outcome.result.attrs == expected.result.attrs and outcome.result.qc_png == expected.result.qc_png
    assert serial["missing"].result is None and "slide file not found" in serial["missing"].reason
    assert len(serial["svs"].result.coords) > 0 and serial["ome"].result.attrs["mpp"] == 0.5


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the crash is planted through fork")
def test_a_slide_that_kills_its_process_fails_alone(jobs, monkeypatch, caplog):
    real = tiling_pool.tile_slide

    def crashing(path, config, mpp_override=None):
        if mpp_override == 1.0:  # the "svs-coarse" job: a segfault in a C reader, as a damaged file can cause
            faulthandler.disable()  # (pytest's traceback dump of the dying worker is noise here)
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(path, config, mpp_override)

    monkeypatch.setattr(tiling_pool, "tile_slide", crashing)  # forked workers inherit the patch
    first = [jobs[-1], *jobs[:-1]]  # the crash comes first: slides not started yet go on in a new pool
    with caplog.at_level(logging.WARNING, logger="slidemil.tile"):
        outcomes = {o.job.slide_id: o for o in tile_slides(first, CONFIG, workers=2)}
    died = [r.getMessage() for r in caplog.records if "a tiling process died" in r.getMessage()]
    assert len(died) == 1 and "svs-coarse" in died[0]  # one line; only the slides in flight run alone
    retried = died[0].split("while tiling ")[1].split(";")[0].split(", ")
    assert len(retried) <= 2  # at most one slide per worker was in flight
    others = int(died[0].split("the other ")[1].split(" ")[0])  # not started: a new pool, not one by one
    assert 1 <= others <= len(jobs) - len(retried)
    assert sorted(outcomes) == sorted(j.slide_id for j in jobs)
    assert outcomes["svs-coarse"].result is None and outcomes["svs-coarse"].reason == CRASH_REASON
    assert all(outcomes[s].result is not None for s in ("svs", "pyramid", "ome"))
    assert "slide file not found" in outcomes["missing"].reason


def test_resolve_workers():
    assert resolve_workers(4, 10) == 4
    assert resolve_workers(4, 2) == 2  # never more processes than slides
    assert resolve_workers(3, 0) == 1
    assert 1 <= resolve_workers("auto", 100) <= tiling_pool.MAX_AUTO_WORKERS
