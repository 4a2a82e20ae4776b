"""Heatmaps from stored features: planted witnesses found, instance scores, rasterising, drawing, contact sheet."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from slidemil.mil_models import create_mil_model
from slidemil.mil_models.instance import instance_scores
from slidemil.mil_models.synthetic import planted_signal_bags
from slidemil.pipeline.heatmaps import (
    contact_sheet,
    heatmap_figure,
    patch_scores,
    percentiles,
    raster,
    read_slide,
    slide_heatmap_figure,
)
from slidemil.pipeline.trainer import Bag, TrainConfig, train_fold

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CMU1 = "wsi-aperio-svs/CMU-1-Small-Region.svs"  # 2220 x 2967 level-0 px, 0.499 µm/px


def test_percentiles_rank_within_the_slide():
    np.testing.assert_allclose(percentiles([0.1, 0.7, 0.2, 0.0]), [1 / 3, 1.0, 2 / 3, 0.0])
    np.testing.assert_allclose(percentiles([5.0, 5.0, 1.0]), [0.75, 0.75, 0.0])  # ties share their mean rank
    np.testing.assert_allclose(percentiles([3.0]), [1.0])


@pytest.fixture(scope="module")
def planted_abmil():
    """Three ABMIL 'fold models' trained on planted-witness bags (different seeds) and held-out bags."""
    data = planted_signal_bags(60, dim=64, n_instances=(20, 40), n_witnesses=(3, 6), shift=6.0, seed=1)
    bags = [Bag(f"b{i}", x, int(y)) for i, (x, y) in enumerate(zip(data.bags, data.labels, strict=True))]
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        cfg = TrainConfig(epochs=6, lr=3e-3, batch_size=4, max_instances=0, patience=0, seed=seed, amp=False)
        result = train_fold(lambda: create_mil_model("abmil", in_dim=64, n_classes=2, hidden_dim=32, dropout=0.0),
                            bags[:40], bags[40:46], 2, cfg)
        models.append(result.model)
    held_out = [(data.bags[i].numpy(), data.witnesses[i].numpy()) for i in range(46, 60) if data.labels[i]]
    return models, held_out


def test_heatmap_finds_the_planted_witnesses(planted_abmil):
    models, held_out = planted_abmil
    aurocs, precision = [], []
    for features, witnesses in held_out:
        scores = patch_scores(models, features)
        assert scores.proba.argmax() == 1  # the bag holds witnesses
        assert scores.class_scores is None  # ABMIL has no instance classifier
        aurocs.append(roc_auc_score(witnesses, scores.attention))
        top = np.argsort(-scores.attention)[: witnesses.sum()]
        precision.append(witnesses[top].mean())
    assert min(aurocs) >= 0.9, aurocs
    assert np.mean(precision) >= 0.8, precision  # the top-k patches are (nearly all) the planted ones
    one = patch_scores(models, held_out[0][0][:1])  # a one-patch slide still gets its (trivial) map
    assert one.attention.tolist() == [1.0] and one.proba.shape == (2,)


@pytest.mark.parametrize("head", ["clam_sb", "clam_mb", "dsmil", "mean_mlp", "max_mlp", "abmil", "transmil"])
def test_instance_scores_of_each_head(head):
    torch.manual_seed(0)
    model = create_mil_model(head, in_dim=8, n_classes=3).eval()
    x = torch.randn(7, 8)
    scores = instance_scores(model, x)
    if head in ("abmil", "transmil"):
        assert scores is None
        return
    assert scores.shape == (7, 3) and bool(((scores >= 0) & (scores <= 1)).all())
    if head != "clam_sb" and head != "clam_mb":
        torch.testing.assert_close(scores.sum(1), torch.ones(7))
    if head == "mean_mlp":  # a linear classifier of the mean embedding = the mean of the instance logits
        logits = model.classifier(model.embed(x)).mean(0)
        torch.testing.assert_close(model(x[None])["logits"][0], logits)


def test_raster_paints_each_patch_square():
    coords = np.array([[0, 0], [256, 0], [0, 256]])
    grid = raster(coords, [0.1, 0.5, 0.9], 256, scale=1 / 64, shape=(10, 10))  # 4 px per patch
    assert np.allclose(grid[:4, :4], 0.1) and np.allclose(grid[:4, 4:8], 0.5) and np.allclose(grid[4:8, :4], 0.9)
    assert np.isnan(grid[4:, 4:]).all() and np.isnan(grid[8:]).all()
    tiny = raster(coords, [0.1, 0.5, 0.9], 256, scale=1 / 1024, shape=(2, 2))  # a patch under one pixel: still drawn
    assert np.isfinite(tiny).sum() >= 1


def test_heatmap_figure_on_the_real_slide_and_blank(real_data, tmp_path):
    import matplotlib.pyplot as plt

    coords = np.stack(np.meshgrid(np.arange(8) * 256, np.arange(11) * 256), -1).reshape(-1, 2)
    values = percentiles(np.random.default_rng(0).random(len(coords)))
    attrs = {"slide_path": str(real_data / CMU1), "mpp": 0.499, "mpp_source": "aperio", "level": 0,
             "read_size": 256, "patch_size": 128, "patch_size_level0": 256}
    pixels = read_slide(attrs, coords, [0, 5], max_size=256)
    assert pixels.thumbnail.shape[1] == 192 and pixels.thumbnail.shape[0] == 256  # 2220 x 2967, longer side 256
    assert pixels.scale == pytest.approx(192 / 2220)
    assert [p.shape for p in pixels.patches] == [(128, 128, 3)] * 2 and not pixels.problem
    fig = heatmap_figure(coords, values, 256, pixels.thumbnail, pixels.scale, 0.499, "title")
    assert len(fig.axes) == 2  # slide and colour bar
    scale_bar = [a for a in fig.axes[0].artists if type(a).__name__ == "AnchoredSizeBar"]
    assert len(scale_bar) == 1 and scale_bar[0].txt_label.get_text() in ("200 µm", "500 µm")  # ≈ 1/5 of 1.1 mm
    fig.savefig(tmp_path / "heat.png")
    plt.close(fig)
    blank, problem = slide_heatmap_figure({"patch_size_level0": 256}, coords, values, "no slide file")
    assert "no slide_path" in problem and len(blank.axes) == 2
    plt.close(blank)
    missing = read_slide({**attrs, "slide_path": str(tmp_path / "gone.svs")}, coords, [0])
    assert missing.thumbnail is None and "not found" in missing.problem


def test_contact_sheet_layout():
    top = [np.full((64, 64, 3), 10 * i, np.uint8) for i in range(3)]
    sheet = contact_sheet(top, top[:2], ["a", "b", "c"], ["d", "e"], tile=32, title="t")
    assert sheet.dtype == np.uint8 and sheet.shape[2] == 3
    assert sheet.shape[1] == 3 * (32 + 4) + 4
    # the second patch of the top row sits at x = 4 + 36, y = 24 + 16, filled with value 10
    assert (sheet[24 + 16 + 5, 4 + 36 + 5] == 10).all()
