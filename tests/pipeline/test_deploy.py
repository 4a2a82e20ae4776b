"""`slidemil deploy` and `slidemil heatmap` end to end on a small real project: 6 demo slides tiled, encoded with
the ``tiny_test`` encoder, split into 3 folds, ABMIL and CLAM-SB trained for 2 epochs (slow: ~1 min)."""

import argparse
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from slidemil.core.params import load_params
from slidemil.pipeline.provenance import ProvenanceError
from slidemil.pipeline.tracking import file_digest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

DEMO = Path(__file__).resolve().parents[2] / "demo"
TRAINING = ["cmu1-P01-a", "cmu1-P02-a", "cmu1-P03-a", "cmu1-P04-a", "cmu1-P07-a", "cmu1-P08-a"]


def write_cohort(path: Path, slide_ids: list[str], extra=()) -> Path:
    """A cohort CSV of demo slides (absolute paths) plus ``extra`` rows."""
    cohort = pd.read_csv(DEMO / "cohort.csv", dtype=str, keep_default_na=False).set_index("slide_id")
    rows = [{"slide_id": s, "path": str(DEMO / cohort.at[s, "path"]), "patient_id": cohort.at[s, "patient_id"],
             "label": cohort.at[s, "label"]} for s in slide_ids]
    pd.DataFrame([*rows, *extra], columns=["slide_id", "path", "patient_id", "label"]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory, blank_db):
    """The trained project folder (cwd during the module's tests)."""
    from slidemil.pipeline.stages import extract, split, tile, train

    root = tmp_path_factory.mktemp("deploy")
    shutil.copy(blank_db, root / "mlflow.db")
    write_cohort(root / "cohort.csv", TRAINING)
    (root / "params.yaml").write_text(
        "cohort: cohort.csv\n"
        "task: {label: label, classes: [dense, sparse]}\n"
        "extract: {encoder: tiny_test, device: cpu, batch_size: 16, num_workers: 1}\n"
        "split: {n_folds: 3, val_fraction: 0.25}\n"
        "train: {heads: [abmil, clam_sb], epochs: 2, patience: 0, n_bootstrap: 50, n_heatmaps: 1, log_model: false,"
        " device: cpu, batch_size: 2}\n"
        f"mlflow: {{tracking_uri: 'sqlite:///{root}/mlflow.db'}}\n"
        "deploy: {n_bootstrap: 50, device: cpu}\n"
        "heatmap: {thumbnail_size: 256, top_k: 2}\n"
    )
    cwd, saved_uri = os.getcwd(), os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.chdir(root)
    try:
        params = load_params("params.yaml")
        assert tile.run(params, argparse.Namespace(force=False)) == 0
        assert extract.run(params, argparse.Namespace(force=False, list_encoders=False)) == 0
        assert split.run(params, argparse.Namespace()) == 0
        assert train.run(params, argparse.Namespace(head=None)) == 0
        yield root
    finally:
        os.chdir(cwd)
        if saved_uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved_uri


def deploy(overrides=(), **options):
    from slidemil.pipeline.stages import deploy as stage

    options = {"cohort": None, "features": None, "head": None, **options}
    return stage.run(load_params("params.yaml", list(overrides)), argparse.Namespace(**options))


def test_deploy_on_the_training_cohort_equals_cross_validation(project, caplog):
    with caplog.at_level(logging.WARNING, logger="slidemil.pipeline.stages.deploy"):
        assert deploy(cohort="cohort.csv") == 0
    out = project / "deploy/cohort"
    predictions = pd.read_csv(out / "predictions.csv", dtype={"slide_id": str})
    assert len(predictions) == 6 * 2 and set(predictions["head"]) == {"abmil", "clam_sb"}  # one row per slide, head
    for head in ("abmil", "clam_sb"):
        cv = pd.read_csv(project / f"predictions/train@{head}.csv", dtype={"slide_id": str})
        ours = predictions[predictions["head"] == head].set_index("slide_id")
        for row in cv.itertuples():  # each slide by its own fold's model, as in its CV test fold
            for c in ("dense", "sparse"):
                assert ours.at[row.slide_id, f"fold-{row.fold}/prob_{c}"] == pytest.approx(getattr(row, f"prob_{c}"),
                                                                                            abs=1e-6)
        folds = ours[[f"fold-{k}/prob_dense" for k in range(3)]].to_numpy()
        np.testing.assert_allclose(ours["prob_dense"], folds.mean(axis=1))  # the ensemble is the mean
    warned = [r.getMessage() for r in caplog.records if "TRAINING cohort" in r.getMessage()]
    assert len(warned) == 2 and "P01 (slides cmu1-P01-a)" in warned[0] and "left out of the metrics" in warned[0]
    assert predictions["in_training_cohort"].all()
    assert not (out / "metrics").exists()  # every patient excluded: no metrics
    # re-tiled and encoded as in training: identical features, and a second run resumes
    assert (pd.read_csv(out / "status.csv")["status"] == "predicted").all()
    assert deploy(cohort="cohort.csv") == 0
    assert pd.read_csv(out / "features/manifest.csv")["reason"].str.startswith("up to date").all()


def test_deploy_on_new_slides_predicts_the_tiled_and_names_the_rest(project):
    real = DEMO / "real"
    extra = [
        {"slide_id": "ext-svs", "path": str(real / "wsi-aperio-svs/CMU-1-Small-Region.svs"), "patient_id": "X1",
         "label": "sparse"},
        {"slide_id": "ext-camelyon", "path": str(real / "wsi-dicom-camelyon/multiframe_camelyon_challenge_image.dcm"),
         "patient_id": "X2", "label": "dense"},
        {"slide_id": "ext-os1-crop", "path": str(real / "wsi-ome-tiff-he/OS-1-detail.ome.tif"), "patient_id": "X3",
         "label": ""},
        {"slide_id": "ext-missing", "path": str(project / "nowhere.svs"), "patient_id": "X4", "label": "dense"},
    ]
    cohort = write_cohort(project / "external.csv", ["cmu1-P05-a"], extra)
    assert deploy(["deploy.exclude_training_patients=false"], cohort=str(cohort), head=["abmil"]) == 0
    out = project / "deploy/external"
    status = pd.read_csv(out / "status.csv", dtype=str, keep_default_na=False).set_index("slide_id")
    assert status.at["ext-svs", "status"] == "predicted" and status.at["cmu1-P05-a", "status"] == "predicted"
    # the tile stage's status and words, once (not extract's "skipped" wrapping them)
    assert status.at["ext-camelyon", "status"] == "failed"
    assert status.at["ext-camelyon", "reason"].startswith("tiling: ") and "finer than the scan" in status.at[
        "ext-camelyon", "reason"]
    assert status.at["ext-os1-crop", "status"] == "skipped" and "smaller than one patch" in status.at["ext-os1-crop",
                                                                                                      "reason"]
    assert status.at["ext-missing", "status"] == "failed"
    assert status.at["ext-missing", "reason"].count("slide file not found") == 1
    predictions = pd.read_csv(out / "predictions.csv", dtype={"slide_id": str})
    assert sorted(predictions["slide_id"]) == ["cmu1-P05-a", "ext-svs"] and not predictions["in_training_cohort"].any()
    tiles = pd.read_csv(out / "tiles/manifest.csv").set_index("slide_id")
    assert tiles.at["ext-svs", "n_patches"] > 5  # tiled at the training resolution (0.5 µm/px, 512 px)
    # labelled → the CV metrics with bootstrap intervals, per fold model and for the ensemble
    headline = json.loads((out / "metrics/deploy@abmil.json").read_text())  # what `dvc metrics show` lists
    assert headline["n_usable_folds"] == 3 and headline["auroc_low"] <= headline["auroc"] <= headline["auroc_high"]
    metrics = json.loads((out / "predictions/deploy@abmil.details.json").read_text())
    assert metrics["test/n_folds"] == 3 and len(metrics["folds"]) == 3
    assert metrics["test/auroc_ci_low"] <= metrics["test/auroc_ci_high"]
    assert (out / "plots/deploy@abmil/roc.png").is_file()
    # one MLflow run in the training experiment, tagged with the cohort digest, linked to the trained run
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    experiment = client.get_experiment_by_name("label: dense vs sparse").experiment_id  # named by what it predicts
    runs = [r for r in client.search_runs([experiment], "tags.stage = 'deploy'")
            if r.data.tags["deploy.cohort"] == str(cohort)]
    assert [r.info.run_name for r in runs] == ["deploy@abmil"]
    run = runs[0]
    assert run.data.tags["deploy.cohort_digest"] == file_digest(cohort)
    trained = [r for r in client.search_runs([experiment], "tags.stage = 'train' and tags.method = 'abmil'")
               if "mlflow.parentRunId" not in r.data.tags][0]  # the parent, not a fold run
    assert run.data.tags["trained_run_id"] == trained.info.run_id
    assert run.data.metrics["test/auroc_mean"] == pytest.approx(metrics["test/auroc_mean"])


def test_features_of_another_encoder_are_refused(project):
    from slidemil.extract.store import FeatureStoreWriter

    writer = FeatureStoreWriter(project / "other.zarr", "conch_v1", "synthetic:1", 64)
    attrs = {"patch_size": 448, "target_mpp": 0.5}
    with writer.lock("cmu1-P05-a") as lock:
        writer.write_slide("cmu1-P05-a", np.zeros((2, 64), np.float32), np.zeros((2, 2), np.int64), attrs, lock)
    write_cohort(project / "p05.csv", ["cmu1-P05-a"])
    with pytest.raises(ProvenanceError, match="encoder: models 'tiny_test', store 'conch_v1'.*patch size.*512, store 448"):
        deploy(cohort="p05.csv", features=str(project / "other.zarr"))
    # the training store itself is accepted as given features
    assert deploy(["deploy.output=deploy/given"], cohort="cohort.csv", features="data/features/tiny_test.zarr",
                  head=["abmil"]) == 0
    assert len(pd.read_csv(project / "deploy/given/predictions.csv")) == 6


def test_models_from_an_mlflow_run_predict_like_the_checkpoints(project):
    from slidemil.pipeline.ensemble import load_checkpoint
    from slidemil.pipeline.tracking import parent_run
    from slidemil.pipeline.trainer import BagProbabilities

    fold0 = load_checkpoint(project / "models/abmil/fold-0.pt")
    uri = f"sqlite:///{project}/mlflow.db"
    with parent_run("train", "abmil-copy", {}, {}, "label", uri) as parent, parent.fold_run(0) as child:
        child.log_model(BagProbabilities(fold0.model), 64, 2, parent.tracking)
    assert deploy(["deploy.output=deploy/mlflow", f"deploy.model_uris={{abmil: 'runs:/{parent.run_id}'}}"],
                  cohort="cohort.csv", head=["abmil"]) == 0
    ours = pd.read_csv(project / "deploy/mlflow/predictions.csv").set_index("slide_id")
    reference = pd.read_csv(project / "deploy/cohort/predictions.csv")
    reference = reference[reference["head"] == "abmil"].set_index("slide_id")
    np.testing.assert_allclose(ours.loc[reference.index, "fold-0/prob_dense"], reference["fold-0/prob_dense"],
                               atol=1e-6)


def test_heatmaps_of_a_deploy_store(project):
    from slidemil.pipeline.stages import heatmap

    deploy(cohort="cohort.csv")  # up to date: resumes
    params = load_params("params.yaml", ["heatmap.tissue_geojson=true"])
    store = "deploy/cohort/features/tiny_test.zarr"
    assert heatmap.run(params, argparse.Namespace(head="clam_sb", slides=["cmu1-P04-a"], store=store)) == 0
    out = project / "heatmaps/clam_sb"
    for name in ("cmu1-P04-a.png", "cmu1-P04-a.score_dense.png", "cmu1-P04-a.patches.png", "cmu1-P04-a.geojson",
                 "cmu1-P04-a.tissue.geojson"):
        assert (out / name).stat().st_size > 100, name
    index = pd.read_csv(out / "index.csv").set_index("slide_id")
    predictions = pd.read_csv(project / "deploy/cohort/predictions.csv")
    expected = predictions[(predictions["head"] == "clam_sb") & (predictions["slide_id"] == "cmu1-P04-a")]
    assert index.at["cmu1-P04-a", "prob_dense"] == pytest.approx(expected["prob_dense"].iloc[0], abs=1e-6)
    assert index.at["cmu1-P04-a", "label"] == "dense"
    detections = json.loads((out / "cmu1-P04-a.geojson").read_text())["features"]
    assert len(detections) == index.at["cmu1-P04-a", "n_patches"]
    assert set(detections[0]["properties"]["measurements"]) == {"attention percentile", "score dense", "score sparse"}
    tissue = json.loads((out / "cmu1-P04-a.tissue.geojson").read_text())["features"]
    assert tissue and tissue[0]["properties"]["objectType"] == "annotation"
    assert heatmap.run(params, argparse.Namespace(head="abmil", slides=["nope"], store=store)) == 1
