"""Training provenance: the tiling rebuilt and checked by its digest, feature stores refused on a difference,
deploy tables (fold and ensemble columns, training-cohort overlap)."""

from dataclasses import asdict

import numpy as np
import pytest

from slidemil.core.errors import SlidemilError
from slidemil.extract.store import FeatureStoreWriter, open_features
from slidemil.extract.tiles import params_digest
from slidemil.pipeline.deploy import kind_outputs, predictions_wide, training_overlap
from slidemil.pipeline.provenance import (
    ProvenanceError,
    check_features,
    extract_section,
    provenance_from_store,
    tile_section,
)
from slidemil.pipeline.stages import extract, tile

PREPROCESS = {"size": 64, "interpolation": "bilinear"}


def _tile_attrs(cfg: dict, override=None) -> dict:
    """The attrs the tile stage writes for a slide tiled with ``cfg`` (the validated tile section)."""
    digest = params_digest({**{k: v for k, v in cfg.items() if k not in tile._NOT_IN_DIGEST and k != "tissue"},
                            "tissue": asdict(cfg["tissue"]), "mpp_override": override})
    return {"target_mpp": cfg["target_mpp"], "patch_size": cfg["patch_size"], "overlap": cfg["overlap"],
            "tissue": {**asdict(cfg["tissue"]), "method_used": "saturation", "threshold": 21.0, "mask_mpp_used": 8.1},
            "params_digest": digest, "mpp": override or 0.499, "mpp_source": "override" if override else "tiff",
            "preprocess": PREPROCESS, "dtype": "float32"}


def _store(path, attrs, encoder="tiny_test", weights="random:0"):
    writer = FeatureStoreWriter(path, encoder, weights, 4)
    with writer.lock("s1") as lock:
        writer.write_slide("s1", np.zeros((2, 4), np.float32), np.zeros((2, 2), np.int64), attrs, lock)
    return open_features(path)


def _training_cfg():
    from slidemil.core.params import stage_params

    section = stage_params({"tile": {"target_mpp": 1.0, "patch_size": 256, "min_tissue_fraction": 0.5,
                                     "tissue": {"close_um": 16.0}}}, "tile", tile.DEFAULTS)
    return section, tile.validate(section)


def test_tiling_is_rebuilt_from_the_attrs_and_checked_by_digest(tmp_path):
    from slidemil.core.params import stage_params

    section, cfg = _training_cfg()
    store = _store(tmp_path / "f.zarr", _tile_attrs(cfg))
    provenance = provenance_from_store(store, "s1")
    assert provenance["tiling"]["target_mpp"] == 1.0 and "method_used" not in provenance["tiling"]["tissue"]
    # today's params changed the recorded keys: the training values win
    today = stage_params({"tile": {"target_mpp": 0.5, "min_tissue_fraction": 0.5}}, "tile", tile.DEFAULTS)
    rebuilt = tile_section(provenance, today)
    assert rebuilt["target_mpp"] == 1.0 and rebuilt["patch_size"] == 256 and rebuilt["tissue"]["close_um"] == 16.0
    # a key the attrs do not record, changed since training: refused, named
    changed = stage_params({"tile": {"min_tissue_fraction": 0.3}}, "tile", tile.DEFAULTS)
    with pytest.raises(ProvenanceError, match="min_tissue_fraction"):
        tile_section(provenance, changed)
    # an mpp override of the training slide is part of its digest
    with_override = provenance_from_store(_store(tmp_path / "g.zarr", _tile_attrs(cfg, override=0.25)), "s1")
    assert with_override["tiling"]["mpp_override"] == 0.25
    assert tile_section(with_override, today)["target_mpp"] == 1.0


def test_feature_store_refused_naming_the_difference(tmp_path):
    _, cfg = _training_cfg()
    provenance = provenance_from_store(_store(tmp_path / "train.zarr", _tile_attrs(cfg)), "s1")
    check_features(provenance, _store(tmp_path / "same.zarr", _tile_attrs(cfg)))  # same: accepted
    other = _store(tmp_path / "other.zarr", {**_tile_attrs(cfg), "patch_size": 512, "target_mpp": 0.5},
                   encoder="conch_v1", weights="abc123")
    with pytest.raises(ProvenanceError) as err:
        check_features(provenance, other)
    message = str(err.value)
    for words in ("encoder: models 'tiny_test', store 'conch_v1'", "weights digest: models 'random:0', store 'abc123'",
                  "patch size (px at target mpp): models 256, store 512", "mpp (µm/px): models 1.0, store 0.5"):
        assert words in message


def test_extract_section_uses_the_training_encoder():
    from slidemil.core.params import stage_params

    today = stage_params({"extract": {"encoder": "conch_v1", "device": "cpu", "dtype": "float16"}}, "extract",
                         extract.DEFAULTS)
    section = extract_section({"encoder_id": "timm-resnet18", "weights_sha256": "random:3", "dtype": "float32"}, today)
    assert section["encoder"] == "timm:resnet18" and section["checkpoint"] == "random:3"
    assert section["dtype"] == "float32" and section["device"] == "cpu"
    real = extract_section({"encoder_id": "conch_v1", "weights_sha256": "9a1b", "dtype": "float32"},
                           {**today, "checkpoint": "/w/conch.bin"})
    assert real["checkpoint"] == "/w/conch.bin"  # real weights: today's file, checked against the digest afterwards


def test_wide_predictions_hold_each_fold_and_the_mean():
    outputs = np.array([[[0.9, 0.1], [0.2, 0.8]], [[0.7, 0.3], [0.4, 0.6]]])  # (F=2, n=2, C=2)
    table = predictions_wide("abmil", ["a", "b"], ["p1", "p2"], ["x", ""], ["fold-0", "fold-1"], outputs, ["x", "y"])
    assert list(table.columns) == ["slide_id", "patient_id", "head", "label", "fold-0/prob_x", "fold-0/prob_y",
                                   "fold-0/pred", "fold-1/prob_x", "fold-1/prob_y", "fold-1/pred", "prob_x", "prob_y",
                                   "pred"]
    np.testing.assert_allclose(table["prob_x"], [0.8, 0.3])
    assert table["pred"].tolist() == ["x", "y"] and table["fold-1/pred"].tolist() == ["x", "y"]
    with pytest.raises(SlidemilError, match="survival"):
        kind_outputs("survival", outputs[0], ["x", "y"])


def test_training_overlap_names_patients_and_slides():
    overlap = training_overlap({"s2": "P1", "s1": "P1", "s3": "P9", "s4": "P2"}, ["P1", "P2", "P3"])
    assert overlap == {"P1": ["s1", "s2"], "P2": ["s4"]}
    assert training_overlap({"s1": "Q"}, []) == {}


def test_fold_models_of_different_features_are_not_deployed_together():
    from torch import nn

    from slidemil.pipeline.ensemble import FoldModel
    from slidemil.pipeline.stages.deploy import common_provenance

    def fold(name, weights):
        return FoldModel(name, nn.Identity(), ["a", "b"], provenance={"encoder_id": "conch_v1", "weights_sha256": weights,
                                                                     "tiling": {"params_digest": "d1"}})

    same = {"abmil": [fold("fold-0", "w1"), fold("fold-1", "w1")], "clam_sb": [fold("fold-0", "w1")]}
    assert common_provenance(same)["weights_sha256"] == "w1"
    assert common_provenance({"abmil": [FoldModel("fold-0", nn.Identity(), ["a", "b"])]}) is None
    mixed = {"abmil": [fold("fold-0", "w1")], "clam_sb": [fold("fold-0", "w2")]}
    with pytest.raises(ProvenanceError, match="abmil/fold-0: encoder conch_v1, weights w1.*clam_sb/fold-0"):
        common_provenance(mixed)
