"""Fixtures shared by the extract tests: a real slide, a tiles store written directly, the extract stage."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slidemil.core.atomic import write_csv
from slidemil.core.hashing import file_fingerprint, json_sha256
from slidemil.extract.tiles import MANIFEST_COLUMNS, write_slide_tiles

SVS = "wsi-aperio-svs/CMU-1-Small-Region.svs"


class ExtractKit:
    """Helpers to build a tiles store by hand and run the ``extract`` stage with the tiny test encoder."""

    patch = 64  # px: patch size at level 0 of the tiles made by ``make_tiles``

    def make_tiles(self, root: Path, slides: dict, digest_extra: str = "") -> None:
        """A tiles store: {slide_id: (path, coords [N, 2])}; status no_tissue when N == 0."""
        rows = []
        for sid, (path, coords) in slides.items():
            coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
            status = "ok" if len(coords) else "no_tissue"
            attrs = {"status": status, "slide_path": str(path), "mpp": 0.499, "mpp_source": "aperio", "level": 0,
                     "target_mpp": 0.499, "patch_size": self.patch, "patch_size_level0": self.patch,
                     "read_size": self.patch, "level_downsample": 1.0, "overlap": 0,
                     "slide_fingerprint": file_fingerprint(path),
                     "params_digest": json_sha256({"patch": self.patch, "x": digest_extra})[:16]}
            write_slide_tiles(root, sid, coords, np.ones(len(coords), np.float32), attrs)
            rows.append({"slide_id": sid, "status": status, "reason": "" if len(coords) else "no tissue found",
                         "mpp": 0.499, "mpp_source": "aperio", "level": 0, "n_patches": len(coords),
                         "tissue_mm2": 1.0, "seconds": 0.1})
        write_csv(root / "manifest.csv", pd.DataFrame(rows, columns=MANIFEST_COLUMNS))

    def grid(self, x0: int, y0: int, nx: int, ny: int, step: int | None = None) -> list[tuple[int, int]]:
        """Row-major level-0 (x, y) of an ``nx`` x ``ny`` grid (step: two patches)."""
        step = step or self.patch * 2
        return [(x0 + i * step, y0 + j * step) for j in range(ny) for i in range(nx)]

    def run_stage(self, tmp_path: Path, force: bool = False, **overrides) -> tuple[int, pd.DataFrame]:
        """Run ``slidemil extract`` on ``tmp_path/tiles`` → (exit code, manifest indexed by slide_id)."""
        from slidemil.pipeline.stages import extract as stage

        section = {"encoder": "tiny_test", "device": "cpu", "batch_size": 4, "num_workers": 2,
                   "tiles": str(tmp_path / "tiles"), "output": str(tmp_path / "features"), **overrides}
        code = stage.run({"extract": section}, argparse.Namespace(list_encoders=False, force=force))
        manifest = pd.read_csv(tmp_path / "features" / "manifest.csv", dtype={"slide_id": str},
                               keep_default_na=False)
        return code, manifest.set_index("slide_id")


@pytest.fixture(scope="session")
def kit() -> ExtractKit:
    return ExtractKit()


@pytest.fixture
def svs(real_data: Path) -> Path:
    """CMU-1-Small-Region.svs (2220 x 2967 px, 0.499 µm/px; tissue in the middle, glass at the left)."""
    return real_data / SVS
