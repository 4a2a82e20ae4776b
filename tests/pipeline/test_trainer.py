"""Trainer: exact repeats on CPU, non-finite loss, instance cap in training only, early stopping restores best
(AUROC ties to the lower loss, warm-up epochs never chosen), length-bucketed batches, heads without attention."""

import numpy as np
import pytest
import torch
from torch import nn

from slidemil.mil_models import create_mil_model
from slidemil.mil_models.synthetic import planted_signal_bags
from slidemil.pipeline.trainer import (
    Bag,
    NonFiniteLossError,
    TrainConfig,
    improves,
    length_bucketed_batches,
    predict,
    train_fold,
)

DIM = 16

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bags(n, seed, prefix):
    planted = planted_signal_bags(n, dim=DIM, n_instances=(8, 24), shift=3.0, seed=seed)
    return [Bag(f"{prefix}{i}", b, int(y)) for i, (b, y) in enumerate(zip(planted.bags, planted.labels, strict=True))]


@pytest.fixture(scope="module")
def data():
    return _bags(24, 0, "tr"), _bags(10, 1, "va")


def _abmil():
    return create_mil_model("abmil", in_dim=DIM, n_classes=2)


def test_cpu_runs_repeat_exactly_and_learn(data):
    train, val = data
    cfg = TrainConfig(epochs=4, lr=2e-3, batch_size=4, max_instances=10, patience=0, seed=3, class_balance="sampler")
    logged = []
    a = train_fold(_abmil, train, val, 2, cfg, callbacks=[lambda e, m: logged.append((e, m["train/loss"]))])
    b = train_fold(_abmil, train, val, 2, cfg)
    assert [h["train/loss"] for h in a.history] == [h["train/loss"] for h in b.history]
    np.testing.assert_array_equal(a.val.proba, b.val.proba)
    assert [e for e, _ in logged] == [0, 1, 2, 3]
    assert a.history[-1]["val/auroc"] > 0.8  # the planted witnesses are found
    c = train_fold(_abmil, train, val, 2, TrainConfig(**{**cfg.__dict__, "seed": 4}))
    assert not np.array_equal(a.val.proba, c.val.proba)


def test_non_finite_loss_names_the_slides(data):
    train, val = data
    broken = list(train)
    broken[5] = Bag("bad_slide", torch.full((6, DIM), float("nan")), 1)
    with pytest.raises(NonFiniteLossError, match="bad_slide") as info:
        train_fold(_abmil, broken, val, 2, TrainConfig(epochs=2, batch_size=len(broken)))
    assert "bad_slide" in info.value.slide_ids and info.value.epoch == 0


class _Recorder(nn.Module):
    """Mean pooling + linear; records the bag sizes it sees in training and in eval mode."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(DIM, 2)
        self.sizes = {True: set(), False: set()}

    def forward(self, x, mask, label=None):  # x [B, N, D], mask [B, N]
        self.sizes[self.training].update(mask.sum(1).tolist())
        pooled = (x * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)  # (B, D)
        return {"logits": self.linear(pooled), "attention": mask.float(), "aux_loss": None}


def test_instance_cap_in_training_only(data):
    train, val = data
    model = _Recorder()
    result = train_fold(lambda: model, train, val, 2, TrainConfig(epochs=2, max_instances=5, patience=0))
    assert max(model.sizes[True]) == 5
    assert model.sizes[False] == {b.features.shape[0] for b in val}
    assert [a.shape[0] for a in result.val.attention] == [b.features.shape[0] for b in val]
    test_pred = predict(result.model, train[:3], batch_size=2)
    assert [a.shape[0] for a in test_pred.attention] == [b.features.shape[0] for b in train[:3]]


def test_early_stopping_restores_best(data):
    train, val = data
    # lr = 0: nothing improves after the first epoch past the 2 warm-up epochs (never chosen, no patience
    # used up), so training stops after `patience` more epochs
    frozen = train_fold(_abmil, train, val, 2, TrainConfig(epochs=10, lr=0.0, warmup_epochs=2, patience=2,
                                                           monitor="val/loss"))
    assert frozen.stopped_early and len(frozen.history) == 5 and frozen.best_epoch == 2
    # training that ends within the warm-up keeps the best warm-up epoch (ties: the first)
    short = train_fold(_abmil, train, val, 2, TrainConfig(epochs=2, lr=0.0, warmup_epochs=3, monitor="val/loss"))
    assert short.best_epoch == 0
    # a learning run: the returned model is the best post-warm-up epoch's, not the last one's
    cfg = TrainConfig(epochs=6, lr=5e-3, batch_size=2, patience=0, monitor="val/loss", seed=1, warmup_epochs=1)
    result = train_fold(_abmil, train, val, 2, cfg)
    losses = [h["val/loss"] for h in result.history]
    assert result.best_epoch == 1 + int(np.argmin(losses[1:]))
    restored = predict(result.model, val, batch_size=cfg.batch_size)
    np.testing.assert_allclose(restored.proba, result.val.proba, rtol=1e-6)
    p = np.clip(restored.proba[np.arange(len(val)), restored.y_true], 1e-7, 1)
    assert -np.log(p).mean() == pytest.approx(min(losses[1:]), rel=1e-5)


def test_improves_breaks_monitor_ties_with_val_loss():
    best = {"val/auroc": 1.0, "val/loss": 0.5}
    assert improves({"val/auroc": 1.0 - 1e-13, "val/loss": 0.4}, best, "val/auroc")  # tie → lower loss wins
    assert not improves({"val/auroc": 1.0, "val/loss": 0.5}, best, "val/auroc")  # full tie: the earlier stays
    assert not improves({"val/auroc": 0.9, "val/loss": 0.1}, best, "val/auroc")
    assert improves({"val/auroc": 0.9, "val/loss": 0.1}, {"val/auroc": 0.8, "val/loss": 0.05}, "val/auroc")
    assert improves({"val/auroc": 0.0, "val/loss": 0.4}, best, "val/loss")
    assert not improves({"val/auroc": 1.0, "val/loss": 0.6}, best, "val/loss")
    assert improves({"val/auroc": 0.5, "val/loss": 9.0}, None, "val/auroc")


@pytest.mark.parametrize("warmup_epochs", [0, 1])
def test_saturated_val_auroc_keeps_training_to_the_lowest_loss(data, warmup_epochs):
    """Two validation slides: AUROC is 1.0 from epoch 0 on; the best epoch is the lowest-loss one, not epoch 0."""
    train, val = data
    two = [next(b for b in val if b.label == 0), next(b for b in val if b.label == 1)]
    cfg = TrainConfig(epochs=4, lr=2e-3, warmup_epochs=warmup_epochs, patience=3, seed=0)
    result = train_fold(_abmil, train, two, 2, cfg)
    assert result.monitor == "val/auroc"
    aurocs, losses = [h["val/auroc"] for h in result.history], [h["val/loss"] for h in result.history]
    assert aurocs == [1.0] * 4  # saturated at epoch 0: every epoch ties
    assert result.best_epoch == int(np.argmin(losses)) > 0
    assert losses[result.best_epoch] < losses[0]
    p = result.val.proba[np.arange(2), result.val.y_true]
    assert -np.log(p).mean() == pytest.approx(losses[result.best_epoch], rel=1e-5)


def test_predict_without_attention(data):
    class NoAttention(_Recorder):
        def forward(self, x, mask, label=None):
            return {**super().forward(x, mask, label), "attention": None}

    pred = predict(NoAttention(), data[1][:3], batch_size=2)
    assert pred.attention == [None, None, None] and pred.proba.shape == (3, 2)


def test_one_class_validation_monitors_loss(data):
    train, val = data
    one_class = [b for b in val if b.label == 1]
    result = train_fold(_abmil, train, one_class, 2, TrainConfig(epochs=2))
    assert result.monitor == "val/loss"
    assert np.isnan(result.history[0]["val/auroc"])


@pytest.mark.parametrize("head", ["clam_sb", "transmil"])
def test_heads_with_aux_loss_or_positional_encoding_train(data, head):
    train, val = data
    result = train_fold(lambda: create_mil_model(head, in_dim=DIM, n_classes=2), train[:8], val[:4], 2,
                        TrainConfig(epochs=1, batch_size=4))
    assert np.isfinite(result.history[0]["train/loss"])
    assert result.val.proba.shape == (4, 2)


class _BatchRecorder(nn.Module):
    """Mean pooling + linear; records each training batch's bag ids (feature 0 of row 0) and mask."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(DIM, 2)
        self.batches = []

    def forward(self, x, mask, label=None):  # x [B, N, D], mask [B, N]
        self.batches.append((x[:, 0, 0].long().tolist(), mask.clone()))
        pooled = (x * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)  # (B, D)
        return {"logits": self.linear(pooled), "attention": mask.float(), "aux_loss": None}


def test_length_bucketing_cuts_padding_and_sees_every_bag_once():
    planted = planted_signal_bags(60, dim=DIM, n_instances=(10, 300), seed=5)
    train = []
    for i, (features, label) in enumerate(zip(planted.bags, planted.labels, strict=True)):
        features = features.clone()
        features[:, 0] = i  # the bag's id, readable in every row of the padded batch
        train.append(Bag(f"s{i}", features, int(label)))
    padding = {}
    for bucket_batches in (50, 0):
        model = _BatchRecorder()
        cfg = TrainConfig(epochs=2, batch_size=4, bucket_batches=bucket_batches, max_instances=0, patience=0)
        result = train_fold(lambda m=model: m, train, [], 2, cfg)
        assert len(model.batches) == 2 * 15  # ceil(60 / 4) steps per epoch, as the lr schedule assumes
        for epoch in range(2):
            batches = model.batches[15 * epoch : 15 * (epoch + 1)]
            assert sorted(i for ids, _ in batches for i in ids) == list(range(60))  # each bag exactly once
            masks = [mask for _, mask in batches]
            real = sum(int(m.sum()) for m in masks)
            assert real == sum(b.features.shape[0] for b in train)
            expected = (sum(m.numel() for m in masks) - real) / real
            assert result.history[epoch]["train/padding"] == pytest.approx(expected)
        padding[bucket_batches] = np.mean([h["train/padding"] for h in result.history])
    assert padding[0] > 0.3  # random batches of 10-300-row bags pad heavily
    assert padding[50] < padding[0] / 4


def test_bucketed_batches_keep_a_sampled_order_and_repeat_for_a_seed():
    order = torch.tensor([3, 3, 0, 7, 1, 3, 9, 2, 2, 5, 8])  # with repeats, as the class-balanced sampler draws
    lengths = torch.tensor([50, 5, 40, 10, 60, 20, 30, 1, 70, 15])
    a = length_bucketed_batches(order, lengths, 3, 2, torch.Generator().manual_seed(0))
    b = length_bucketed_batches(order, lengths, 3, 2, torch.Generator().manual_seed(0))
    assert a == b and len(a) == 4
    assert sorted(i for batch in a for i in batch) == sorted(order.tolist())
    # windows of 2 × 3 entries, each sorted by length, then cut: the sorted first window comes back whole
    first = sorted(order[:6].tolist(), key=lambda i: lengths[i])
    assert first[:3] in a and first[3:] in a
    assert length_bucketed_batches(order, lengths, 3, 0, torch.Generator()) == [order[i : i + 3].tolist()
                                                                                 for i in (0, 3, 6, 9)]


def test_epoch_progress_bar_shows_the_monitored_metric(data):
    import io

    from slidemil.pipeline.trainer import EpochProgress

    train, val = data
    cfg = TrainConfig(epochs=3, lr=2e-3, batch_size=4, max_instances=10, patience=0, seed=3)
    out = io.StringIO()
    with EpochProgress(cfg.epochs, "abmil fold 0", cfg.monitor, file=out) as progress:
        result = train_fold(_abmil, train, val, 2, cfg, callbacks=[progress])
    text = out.getvalue()
    assert "abmil fold 0" in text and "3/3" in text
    assert f"val/auroc={result.history[-1]['val/auroc']:.3f}" in text
