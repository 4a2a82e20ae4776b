"""Training provenance: the tiling rebuilt and checked by its digest, feature stores refused on a difference,
deploy tables (fold and ensemble columns, training-cohort overlap)."""

import numpy as np
import pytest

from slidemil.core.errors import SlidemilError
from slidemil.extract.sections import ExtractSection, TileSection
from slidemil.extract.store import FeatureStoreWriter, open_features
from slidemil.extract.tiling import tile_slide
from slidemil.pipeline.deploy import kind_outputs, predictions_wide, training_overlap
from slidemil.pipeline.provenance import (
    ProvenanceError,
    check_features,
    extract_section,
    provenance_from_store,
    tile_section,
)

PREPROCESS = {"size": 64, "interpolation": "bilinear"}
SVS = "wsi-aperio-svs/CMU-1-Small-Region.svs"


@pytest.fixture(scope="module")
def tile_attrs(real_data):
    """``(cfg, override) ->`` the attrs a feature store holds for CMU-1-Small-Region tiled with ``cfg``: the
    tile stage's (:func:`tile_slide`) plus the encoder's preprocess and dtype."""
    cache = {}

    def attrs(cfg: TileSection, override=None) -> dict:
        key = (cfg.model_dump_json(), override)
        if key not in cache:
            cache[key] = tile_slide(real_data / SVS, cfg, mpp_override=override).attrs
        return {**cache[key], "preprocess": PREPROCESS, "dtype": "float32"}

    return attrs


def _store(path, attrs, encoder="tiny_test", weights="random:0"):
    writer = FeatureStoreWriter(path, encoder, weights, 4)
    with writer.lock("s1") as lock:
        writer.write_slide("s1", np.zeros((2, 4), np.float32), np.zeros((2, 2), np.int64), attrs, lock)
    return open_features(path)


def _training_cfg() -> TileSection:
    return TileSection(target_mpp=1.0, patch_size=256, min_tissue_fraction=0.5, tissue={"close_um": 16.0})


def test_tiling_is_rebuilt_from_the_attrs_and_checked_by_digest(tmp_path, tile_attrs):
    cfg = _training_cfg()
    attrs = tile_attrs(cfg)
    assert attrs["tissue"]["method_used"] and attrs["params_digest"] == cfg.digest(None)
    provenance = provenance_from_store(_store(tmp_path / "f.zarr", attrs), "s1")
    tissue = provenance["tiling"]["tissue"]
    assert provenance["tiling"]["target_mpp"] == 1.0 and provenance["tiling"]["mpp_override"] is None
    assert tissue == cfg.tissue.model_dump()  # the parameters only: method_used, threshold, … left out
    # today's params changed the recorded keys: the training values win, and the digest is the training one
    today = TileSection(target_mpp=0.5, min_tissue_fraction=0.5, output="elsewhere")
    rebuilt = tile_section(provenance, today)
    assert rebuilt["target_mpp"] == 1.0 and rebuilt["patch_size"] == 256 and rebuilt["tissue"]["close_um"] == 16.0
    assert rebuilt["output"] == "elsewhere" and TileSection(**rebuilt).digest(None) == attrs["params_digest"]
    # a key the attrs do not record, changed since training: refused, named
    with pytest.raises(ProvenanceError, match="min_tissue_fraction"):
        tile_section(provenance, TileSection(min_tissue_fraction=0.3))
    # an mpp override of the training slide is part of its digest
    with_override = provenance_from_store(_store(tmp_path / "g.zarr", tile_attrs(cfg, override=0.25)), "s1")
    assert with_override["tiling"]["mpp_override"] == 0.25
    assert tile_section(with_override, today)["target_mpp"] == 1.0
    with pytest.raises(ProvenanceError, match="cannot be rebuilt"):  # the same tiling without the override
        tile_section({**with_override, "tiling": {**with_override["tiling"], "mpp_override": None}}, today)


def test_feature_store_refused_naming_the_difference(tmp_path, tile_attrs):
    attrs = tile_attrs(_training_cfg())
    provenance = provenance_from_store(_store(tmp_path / "train.zarr", attrs), "s1")
    check_features(provenance, _store(tmp_path / "same.zarr", attrs))  # same: accepted
    other = _store(tmp_path / "other.zarr", {**attrs, "patch_size": 512, "target_mpp": 0.5},
                   encoder="conch_v1", weights="abc123")
    with pytest.raises(ProvenanceError) as err:
        check_features(provenance, other)
    message = str(err.value)
    for words in ("encoder: models 'tiny_test', store 'conch_v1'", "weights digest: models 'random:0', store 'abc123'",
                  "patch size (px at target mpp): models 256, store 512", "mpp (µm/px): models 1.0, store 0.5"):
        assert words in message


def test_extract_section_uses_the_training_encoder():
    today = ExtractSection(encoder="conch_v1", device="cpu", dtype="float16")
    section = extract_section({"encoder_id": "timm-resnet18", "weights_sha256": "random:3", "dtype": "float32"}, today)
    assert section["encoder"] == "timm:resnet18" and section["checkpoint"] == "random:3"
    assert section["dtype"] == "float32" and section["device"] == "cpu"
    real = extract_section({"encoder_id": "conch_v1", "weights_sha256": "9a1b", "dtype": "float32"},
                           today.model_copy(update={"checkpoint": "/w/conch.bin"}))
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
