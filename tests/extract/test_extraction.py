"""The extract stage end to end on real slides with the tiny_test encoder: alignment, zero-patch slide,
corrupt tile, unreadable slide, non-finite output, up-to-date detection, --force, missing tiles."""

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from slidemil.core.atomic import write_csv
from slidemil.core.errors import ParamsError, StoreError
from slidemil.extract.encoders import create_encoder
from slidemil.extract.slide import open_slide
from slidemil.extract.store import open_features
from slidemil.pipeline.stages import extract as stage


def test_features_align_with_tiles_and_zero_patch_slide(tmp_path, svs, kit):
    coords = kit.grid(200, 300, 3, 3)
    kit.make_tiles(tmp_path / "tiles", {"s1": (svs, coords), "empty": (svs, [])})
    code, manifest = kit.run_stage(tmp_path)
    assert code == 0
    assert manifest.loc["s1", "status"] == "ok" and manifest.loc["s1", "n_patches"] == 9
    assert manifest.loc["empty", "status"] == "no_tissue"
    store = open_features(tmp_path / "features" / "tiny_test.zarr")
    features, stored_coords = store.load("s1")
    np.testing.assert_array_equal(stored_coords, coords)
    # row i is the encoding of the patch at coords[i] (read independently through OpenSlide)
    encoder = create_encoder("tiny_test")
    with open_slide(svs) as slide:
        pixels = torch.from_numpy(np.stack([slide.read_region(xy, 0, (kit.patch, kit.patch)) for xy in coords]))
    np.testing.assert_allclose(features, encoder(encoder.prepare_batch(pixels)).numpy(), rtol=1e-4, atol=1e-5)
    empty_features, empty_coords = store.load("empty")
    assert empty_features.shape == (0, 64) and empty_coords.shape == (0, 2)
    attrs = store.attrs("s1")
    assert attrs["encoder_id"] == "tiny_test" and attrs["weights_sha256"] == encoder.weights_sha256
    assert attrs["preprocess"]["size"] == encoder.input_size and attrs["patch_size"] == kit.patch
    assert store.attrs("empty")["status"] == "no_tissue"


def test_up_to_date_and_recompute_on_encoder_or_tiling_change(tmp_path, svs, kit):
    kit.make_tiles(tmp_path / "tiles", {"s1": (svs, kit.grid(0, 0, 2, 2)), "s2": (svs, kit.grid(500, 500, 2, 1))})
    kit.run_stage(tmp_path)
    created = open_features(tmp_path / "features" / "tiny_test.zarr").attrs("s1")["created"]
    _, manifest = kit.run_stage(tmp_path)
    assert set(manifest["reason"]) == {"up to date (not recomputed)"}
    assert open_features(tmp_path / "features" / "tiny_test.zarr").attrs("s1")["created"] == created
    _, manifest = kit.run_stage(tmp_path, checkpoint="random:1")  # other weights → recompute all
    assert set(manifest["reason"]) == {"computed"}
    kit.make_tiles(tmp_path / "tiles", {"s1": (svs, kit.grid(0, 0, 2, 2)), "s2": (svs, kit.grid(500, 500, 2, 1))},
               digest_extra="changed tiling")
    _, manifest = kit.run_stage(tmp_path, checkpoint="random:1")
    assert set(manifest["reason"]) == {"computed"}


def test_stain_normalisation_is_provenance_and_recomputes(tmp_path, svs, kit):
    from PIL import Image

    with open_slide(svs) as slide:
        Image.fromarray(slide.read_region((900, 1500), 0, (128, 128))).save(tmp_path / "ref.png")
    kit.make_tiles(tmp_path / "tiles", {"s1": (svs, kit.grid(800, 1400, 2, 2))})
    kit.run_stage(tmp_path)
    plain = open_features(tmp_path / "features" / "tiny_test.zarr").load("s1")[0]
    stain = {"method": "macenko", "reference": str(tmp_path / "ref.png")}
    _, manifest = kit.run_stage(tmp_path, stain_norm=stain)
    assert set(manifest["reason"]) == {"computed"}  # a new normalisation re-extracts
    store = open_features(tmp_path / "features" / "tiny_test.zarr")
    provenance = store.attrs("s1")["preprocess"]["stain_norm"]
    assert provenance["method"] == "macenko" and provenance["reference"] == "ref.png"
    assert len(provenance["reference_sha256"]) == 64
    assert not np.allclose(store.load("s1")[0], plain)
    _, manifest = kit.run_stage(tmp_path, stain_norm=stain)
    assert set(manifest["reason"]) == {"up to date (not recomputed)"}
    _, manifest = kit.run_stage(tmp_path, stain_norm={**stain, "method": "reinhard"})
    assert set(manifest["reason"]) == {"computed"}
    with pytest.raises(ParamsError, match="extract.stain_norm.method"):
        kit.run_stage(tmp_path, stain_norm={**stain, "method": "vahadane"})


def corrupt_tiff(tmp_path, svs, tiles):
    """A 1024 x 512 JPEG-tiled TIFF of the SVS whose 256-px tiles ``tiles`` (row-major index) are zeroed."""
    with open_slide(svs) as slide:
        pixels = slide.read_region((0, 0), 0, (1024, 512))
    path = tmp_path / "corrupt.tiff"
    tifffile.imwrite(path, pixels, tile=(256, 256), compression="jpeg", resolution=(20040, 20040),
                     resolutionunit="CENTIMETER")
    with tifffile.TiffFile(path) as tif:
        offsets = tif.pages[0].dataoffsets
    with open(path, "r+b") as fh:
        for tile in tiles:
            fh.seek(offsets[tile])
            fh.write(b"\0" * 64)
    return path


def test_corrupt_tile_drops_that_patch(tmp_path, svs, kit):
    path = corrupt_tiff(tmp_path, svs, [1])  # tile (row 0, col 1)
    coords = [(0, 0), (256, 0), (512, 0), (0, 256)]  # (256, 0) lies in the corrupt tile
    kit.make_tiles(tmp_path / "tiles", {"c": (path, coords)})
    code, manifest = kit.run_stage(tmp_path)
    assert code == 0 and manifest.loc["c", "status"] == "ok" and "dropped 1" in manifest.loc["c", "reason"]
    store = open_features(tmp_path / "features" / "tiny_test.zarr")
    features, kept = store.load("c")
    assert features.shape == (3, 64)
    np.testing.assert_array_equal(kept, [coords[0], coords[2], coords[3]])
    dropped = store.attrs("c")["dropped_patches"]
    assert [(d["row"], d["x"], d["y"]) for d in dropped] == [(1, 256, 0)]


def test_slide_unreadable_after_tiling_fails_with_a_warning(tmp_path, svs, caplog, kit):
    path = corrupt_tiff(tmp_path, svs, [0, 1])
    kit.make_tiles(tmp_path / "tiles", {"c": (path, [(0, 0), (256, 0)]), "good": (svs, kit.grid(0, 0, 2, 1))})
    with caplog.at_level(logging.WARNING, logger="slidemil.pipeline.stages.extract"):
        code, manifest = kit.run_stage(tmp_path)
    assert code == 0 and manifest.loc["good", "status"] == "ok"
    assert manifest.loc["c", "status"] == "failed"
    assert manifest.loc["c", "reason"].startswith(f"all 2 patches unreadable: {path}")  # + the first error
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "slide c " in r.getMessage()]
    assert warnings == [f"slide c failed: {manifest.loc['c', 'reason']}"]
    assert open_features(tmp_path / "features" / "tiny_test.zarr").slide_ids == ["good"]


def test_extract_before_tile_stops_before_building_the_encoder(tmp_path, caplog, monkeypatch):
    import slidemil.extract.distributed as dist

    monkeypatch.delenv("CONCH_CHECKPOINT", raising=False)
    monkeypatch.setattr(dist, "get_encoder", lambda config: pytest.fail("encoder built before the tiles check"))
    section = {"tiles": str(tmp_path / "tiles"), "output": str(tmp_path / "features")}  # encoder conch_v1
    with caplog.at_level(logging.WARNING), pytest.raises(StoreError) as err:
        stage.run({"extract": section}, argparse.Namespace(list_encoders=False))
    assert str(err.value) == f"no tiles at {tmp_path / 'tiles'}: run `slidemil tile` first"
    assert not [r for r in caplog.records if "SYNTHETIC" in r.getMessage()]


def test_force_recomputes_up_to_date_slides(tmp_path, svs, kit):
    kit.make_tiles(tmp_path / "tiles", {"s1": (svs, kit.grid(0, 0, 2, 1))})
    kit.run_stage(tmp_path)
    created = open_features(tmp_path / "features" / "tiny_test.zarr").attrs("s1")["created"]
    _, manifest = kit.run_stage(tmp_path, force=True)
    assert manifest.loc["s1", "reason"] == "computed"
    assert open_features(tmp_path / "features" / "tiny_test.zarr").attrs("s1")["created"] > created
    _, manifest = kit.run_stage(tmp_path)
    assert manifest.loc["s1", "reason"] == "up to date (not recomputed)"


def test_level_colour_warning_logged_once_per_slide(tmp_path, real_data, caplog, kit):
    dicom = real_data / "wsi-derived-cmu1/dicom/1.2.826.0.1.3680043.8.498.9899136569992917906874156422226849724.dcm"
    kit.make_tiles(tmp_path / "tiles", {"d": (dicom, kit.grid(0, 0, 4, 2))})
    with caplog.at_level(logging.WARNING, logger="slidemil.extract.slide"):
        code, manifest = kit.run_stage(tmp_path, num_workers=2, batch_size=2)  # 2 reader threads, 2 handles
    assert code == 0 and manifest.loc["d", "status"] == "ok"
    messages = [r.getMessage() for r in caplog.records if "disagrees in colour" in r.getMessage()]
    assert len(messages) == 4 and len(set(messages)) == 4  # levels 1-4 dropped, each said once


def test_non_finite_features_fail_the_slide(tmp_path, svs, kit):
    """nan_test emits NaN on blank glass: the slide with a glass patch fails, the all-tissue one is stored."""
    kit.make_tiles(tmp_path / "tiles", {"good": (svs, kit.grid(1100, 900, 2, 1)), "bad": (svs, kit.grid(0, 0, 2, 1))})
    code, manifest = kit.run_stage(tmp_path, encoder="nan_test")
    assert manifest.loc["bad", "status"] == "failed"
    assert manifest.loc["bad", "reason"].startswith("encoder produced non-finite features for 2 patches (tile rows [0, 1])")
    assert manifest.loc["good", "status"] == "ok" and code == 0
    assert open_features(tmp_path / "features" / "nan_test.zarr").slide_ids == ["good"]
    code, _ = kit.run_stage(tmp_path, encoder="nan_test", fail_if="any_failed")
    assert code == 1


def test_skipped_tiles_are_reported(tmp_path, svs, kit):
    kit.make_tiles(tmp_path / "tiles", {"s1": (svs, kit.grid(0, 0, 1, 1))})
    manifest = pd.read_csv(tmp_path / "tiles" / "manifest.csv", dtype={"slide_id": str}, keep_default_na=False)
    extra = {"slide_id": "broken", "status": "failed", "reason": "unreadable file"}
    write_csv(tmp_path / "tiles" / "manifest.csv", pd.concat([manifest, pd.DataFrame([extra])]))
    _, out = kit.run_stage(tmp_path)
    assert out.loc["broken", "status"] == "skipped" and "unreadable file" in out.loc["broken", "reason"]
    shutil.rmtree(tmp_path / "features")


# ------------------------------------------------------------- crash safety and concurrency (real processes)

SLOW_RUN = textwrap.dedent("""
    import argparse, json, sys, time
    import slidemil.extract.distributed as dist
    from slidemil.extract.encoders.base import Encoder
    real_call = Encoder.__call__
    def slow_call(self, x):
        time.sleep(float(sys.argv[2]))
        return real_call(self, x)
    Encoder.__call__ = slow_call
    real_run_jobs = dist.run_jobs
    def run_jobs(*a, **k):
        rows = real_run_jobs(*a, **k)
        print("ROWS" + json.dumps(rows, default=str), flush=True)
        return rows
    dist.run_jobs = run_jobs
    from slidemil.pipeline.stages import extract as stage
    sys.exit(stage.run({"extract": json.loads(sys.argv[1])}, argparse.Namespace(list_encoders=False)))
""")


def start_slow_run(tmp_path, sleep):
    section = {"encoder": "tiny_test", "device": "cpu", "batch_size": 2, "num_workers": 1,
               "tiles": str(tmp_path / "tiles"), "output": str(tmp_path / "features")}
    return subprocess.Popen([sys.executable, "-c", SLOW_RUN, json.dumps(section), str(sleep)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def three_slides(tmp_path, svs, kit):
    slides = {f"s{i}": (svs, kit.grid(100 * i, 200 * i, 4, 2)) for i in range(1, 4)}
    kit.make_tiles(tmp_path / "tiles", slides)
    return slides


def reference_store(tmp_path, svs, kit):
    ref = tmp_path / "ref"
    three_slides(ref, svs, kit)
    kit.run_stage(ref)
    return open_features(ref / "features" / "tiny_test.zarr")


def assert_same_store(store, ref):
    assert store.slide_ids == ref.slide_ids
    for sid in ref.slide_ids:
        for got, want in zip(store.load(sid), ref.load(sid), strict=True):
            np.testing.assert_array_equal(got, want)


def test_sigkill_mid_slide_then_resume(tmp_path, svs, kit):
    three_slides(tmp_path, svs, kit)
    zarr_path = tmp_path / "features" / "tiny_test.zarr"
    proc = start_slow_run(tmp_path, sleep=0.4)  # 4 batches per slide: ~1.6 s per slide
    deadline = time.monotonic() + 120
    while not ((zarr_path / "s1" / "zarr.json").exists() and (zarr_path / ".locks" / "s2.lock").exists()):
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before slide 2 started"
        time.sleep(0.05)
    time.sleep(0.5)  # inside slide 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = open_features(zarr_path)
    assert store.slide_ids == ["s1"]  # no partial group of s2
    created = store.attrs("s1")["created"]
    _, manifest = kit.run_stage(tmp_path)  # the dead writer's lock is broken
    assert manifest.loc["s1", "reason"] == "up to date (not recomputed)"
    assert manifest.loc["s2", "reason"] == manifest.loc["s3", "reason"] == "computed"
    store = open_features(zarr_path)
    assert store.attrs("s1")["created"] == created
    assert_same_store(store, reference_store(tmp_path, svs, kit))


@pytest.mark.slow
def test_two_runs_at_once_share_the_store(tmp_path, svs, kit):
    three_slides(tmp_path, svs, kit)
    procs = [start_slow_run(tmp_path, sleep=0.2) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    runs = [json.loads(next(line for line in out.splitlines() if line.startswith("ROWS"))[4:]) for out in outputs]
    for sid in ("s1", "s2", "s3"):
        reasons = [row["reason"] for rows in runs for row in rows if row["slide_id"] == sid]
        assert sorted(reasons) == ["computed", "up to date (not recomputed)"], (sid, reasons)  # computed once
    assert_same_store(open_features(tmp_path / "features" / "tiny_test.zarr"), reference_store(tmp_path, svs, kit))


def test_device_preprocessing_matches_pil_reference(svs, kit):
    """uint8 → prepare_batch gives features within cosine 0.999 of the PIL reference path (and CONCH's
    448-px bicubic geometry gives near-identical tensors)."""
    from PIL import Image

    from slidemil.extract.encoders.preprocess import (
        OPENAI_CLIP_MEAN,
        OPENAI_CLIP_STD,
        PilPreprocess,
        Preprocessing,
        prepare_batch,
    )

    with open_slide(svs) as slide:
        patches = np.stack([slide.read_region(xy, 0, (512, 512)) for xy in kit.grid(100, 100, 3, 2, step=512)])
    encoder = create_encoder("tiny_test")
    ref = encoder(torch.stack([encoder.preprocess(Image.fromarray(p)) for p in patches]))
    dev = encoder(encoder.prepare_batch(torch.from_numpy(patches)))
    assert torch.nn.functional.cosine_similarity(ref, dev, dim=1).min() >= 0.999
    spec = Preprocessing(448, "bicubic", OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    pil = torch.stack([PilPreprocess(spec)(Image.fromarray(p)) for p in patches]).flatten(1)
    device = prepare_batch(torch.from_numpy(patches), spec, "cpu").flatten(1)
    assert torch.nn.functional.cosine_similarity(pil, device, dim=1).min() >= 0.999


def test_missing_tiles_name_where_tile_wrote_them(tmp_path, monkeypatch):
    from slidemil.core.errors import StoreError

    monkeypatch.chdir(tmp_path)
    from slidemil.pipeline.stages import extract as stage

    params = {"tile": {"output": str(tmp_path / "tiles")},
              "extract": {"encoder": "tiny_test", "device": "cpu", "output": str(tmp_path / "features")}}
    with pytest.raises(StoreError, match=r"no tiles at data/tiles: run `slidemil tile` first; tile.output is "
                                         r".*tiles': set extract.tiles: .*tiles \(or change tile.output back\)"):
        stage.run(params, argparse.Namespace(list_encoders=False, force=False))
    params["extract"]["tiles"] = str(tmp_path / "tiles")
    with pytest.raises(StoreError, match=r"run `slidemil tile` first$"):  # the same folder: no hint
        stage.run(params, argparse.Namespace(list_encoders=False, force=False))
