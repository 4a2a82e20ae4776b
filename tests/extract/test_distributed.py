"""Scale-out: a dask LocalCluster with 2 CPU workers gives the same store as the in-process run."""

import numpy as np

from slidemil.extract.store import open_features


def test_local_cluster_equals_in_process(tmp_path, svs, kit):
    slides = {f"s{i}": (svs, kit.grid(150 * i, 100 * i, 3, 2)) for i in range(3)}
    for run in ("inproc", "dask"):
        kit.make_tiles(tmp_path / run / "tiles", slides)
    _, inproc = kit.run_stage(tmp_path / "inproc")
    code, dask = kit.run_stage(tmp_path / "dask", scheduler="local", n_workers=2)
    assert code == 0 and list(dask["status"]) == list(inproc["status"]) == ["ok"] * 3
    a = open_features(tmp_path / "inproc" / "features" / "tiny_test.zarr")
    b = open_features(tmp_path / "dask" / "features" / "tiny_test.zarr")
    assert a.slide_ids == b.slide_ids == ["s0", "s1", "s2"]
    for sid in a.slide_ids:
        fa, ca = a.load(sid)
        fb, cb = b.load(sid)
        np.testing.assert_array_equal(ca, cb)
        np.testing.assert_allclose(fa, fb, rtol=0, atol=1e-6)  # 1 vs 2 torch threads: same math, ≤ 1 ulp-ish
