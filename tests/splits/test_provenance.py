"""Stale inputs are refused: split → train lineage through the provenance records (class 1 of issue 15)."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from slidemil.core import provenance
from slidemil.core.errors import StaleInputError
from slidemil.pipeline import cli
from slidemil.pipeline.data import check_features_lineage

FEATURES = "data/features/manifest.csv"


@pytest.fixture
def project(tmp_path, monkeypatch, tcga):
    rows = tcga({"luad": 8, "lusc": 8})
    pd.DataFrame(rows).to_csv(tmp_path / "cohort.csv", index=False)
    params = {"cohort": "cohort.csv", "task": {"label": "label", "classes": []},
              "split": {"n_folds": 3, "tiles_manifest": "", "features_manifest": FEATURES}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "STAGES", {"split": cli.STAGES["split"]})
    write_features(tmp_path, [r["slide_id"] for r in rows], seconds=1.0)
    return tmp_path


def write_features(root, slide_ids, seconds, inputs=None):
    """A features manifest as `slidemil extract` leaves it, with its record (store data/features/x.zarr)."""
    path = root / FEATURES
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"slide_id": slide_ids, "status": "ok", "reason": "computed", "seconds": seconds}).to_csv(
        path, index=False)
    provenance.record(path, "extract", {"store": str((root / "data/features/x.zarr").resolve()), **(inputs or {})})


def test_record_and_check(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("a\n1\n")
    provenance.record(out, "tile", {"tile params": "d1"})
    assert provenance.check(out, "tile", {"tile params": "d1"})["complete"] is True
    with pytest.raises(StaleInputError, match="another tile params .*re-run `slidemil tile`"):
        provenance.check(out, "tile", {"tile params": "d2"})
    out.write_text("a\n2\n")
    with pytest.raises(StaleInputError, match="changed after `slidemil tile` wrote it"):
        provenance.check(out, "tile")
    provenance.begin(out, "tile")
    with pytest.raises(StaleInputError, match="the last `slidemil tile` did not finish"):
        provenance.check(out, "tile")


def test_split_then_consumers_refuse_stale_inputs(project):
    store = project / "data/features/x.zarr"
    assert cli.main(["split"]) == 0
    check_features_lineage(store, "data/splits.json")  # current: accepted

    with pytest.raises(StaleInputError, match="wrote .*x.zarr, not .*y.zarr; re-run `slidemil extract`"):
        check_features_lineage(project / "data/features/y.zarr", "data/splits.json")

    # features re-made (e.g. after re-tiling) since the split: training must not use the old folds
    write_features(project, pd.read_csv(project / FEATURES)["slide_id"], seconds=2.0)
    with pytest.raises(StaleInputError, match=r"older data/features/manifest.csv .*re-run `slidemil split`"):
        check_features_lineage(store, "data/splits.json")

    # tiles re-made after extract and split: the most upstream stage to re-run is named first, then the next
    assert cli.main(["split"]) == 0
    tiles = project / "data/tiles/manifest.csv"
    tiles.parent.mkdir(parents=True)
    tiles.write_text("slide_id,status\n")
    provenance.record(tiles, "tile", {"tile params": "d1"})
    write_features(project, pd.read_csv(project / FEATURES)["slide_id"], seconds=3.0,
                   inputs={str(tiles.relative_to(project)): provenance.file_digest(tiles)})
    assert cli.main(["split"]) == 0
    check_features_lineage(store, "data/splits.json")
    tiles.write_text("slide_id,status\nnew,ok\n")
    provenance.record(tiles, "tile", {"tile params": "d2"})
    with pytest.raises(StaleInputError, match=r"older data/tiles/manifest.csv .*re-run `slidemil extract` "
                                              r"\(or `dvc repro`\); then re-run `slidemil split`$"):
        check_features_lineage(store, "data/splits.json")
    # split refuses the stale features without touching the old splits, so the message stays the same
    assert cli.main(["split"]) == 2
    assert provenance.read_record(project / "data/splits.json")["complete"] is True
    with pytest.raises(StaleInputError, match=r"re-run `slidemil extract` .*; then re-run `slidemil split`$"):
        check_features_lineage(store, "data/splits.json")
    write_features(project, pd.read_csv(project / FEATURES)["slide_id"], seconds=4.0,
                   inputs={str(tiles.relative_to(project)): provenance.file_digest(tiles)})  # extract re-run
    assert cli.main(["split"]) == 0
    check_features_lineage(store, "data/splits.json")

    # a split that fails leaves no splits.json that looks current
    assert cli.main(["split", "--set", "task.classes=[luad, nope]"]) == 2
    assert (project / "data/splits.json").is_file()
    with pytest.raises(StaleInputError, match="last `slidemil split` did not finish; re-run `slidemil split`"):
        check_features_lineage(store, "data/splits.json")

    # an interrupted extraction: split refuses and names the stage
    provenance.begin(project / FEATURES, "extract")
    with pytest.raises(StaleInputError, match="last `slidemil extract` did not finish"):
        from slidemil.pipeline.stages import split
        split.run(yaml.safe_load((project / "params.yaml").read_text()), None)
