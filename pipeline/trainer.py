"""Training loop for MIL heads on bags held in memory (no file I/O, no logging: callbacks report).

AdamW with linear warm-up then cosine decay (stepped per optimiser step), cross-entropy with inverse
class-frequency weights or class-balanced sampling, gradient clipping, AMP (bf16 autocast) on CUDA,
padded mini-batches with masks, formed in training from bags of similar length (length-bucketed, to cut
padding), a random cap on instances per bag in training only (validation and test see whole bags),
early stopping on a validation metric with patience and the best epoch's weights restored (AUROC ties go
to the lower validation loss; the warm-up epochs are not candidates and do not use up patience).
Survival and regression train through an ``objective`` (:mod:`slidemil.pipeline.kinds.objectives`) in place
of the cross-entropy. Seeded so that a CPU run repeats exactly.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from slidemil.core.errors import SlidemilError
from slidemil.mil_models.batching import pad_bags
from slidemil.pipeline.kinds.objectives import Objective
from slidemil.pipeline.metrics import OneClassWarning, classification_metrics
from slidemil.pipeline.train_config import TrainConfig

MONITORS = {"val/auroc": "max", "val/loss": "min", "val/c_index": "max"}
TIE = 1e-12  # monitor values this close are a tie, settled by the validation loss

EpochCallback = Callable[[int, dict[str, float]], None]


class NonFiniteLossError(SlidemilError):
    """The training loss became NaN/inf; the fold stops. ``slide_ids`` are the bags of that batch."""

    def __init__(self, epoch: int, slide_ids: Sequence[str], value: float) -> None:
        self.epoch = epoch
        self.slide_ids = list(slide_ids)
        super().__init__(
            f"non-finite training loss ({value}) at epoch {epoch} on the batch of slides {self.slide_ids}; "
            "check those slides' features for NaN/inf, or lower train.lr"
        )


@dataclass(frozen=True)
class Bag:
    """One slide's (or patient's) bag: ``features [N, D]`` float32 (CPU or device) and its target: an integer
    class ``label`` (classification), ``(time, event)`` (survival) or a number (regression)."""

    slide_id: str
    features: torch.Tensor
    label: Any


@dataclass
class Predictions:
    """Model outputs on a list of bags: ``proba [n, C]`` (with an objective: its prediction, e.g. risk and
    survival per bin), ``y_true [n]`` (survival ``[n, 2]``), per-bag ``attention [N_i]`` (None when the head
    returns no attention), ``raw [n, K]`` the head's outputs."""

    slide_ids: list[str]
    y_true: np.ndarray
    proba: np.ndarray
    attention: list[np.ndarray | None] = field(default_factory=list)
    raw: np.ndarray | None = None


@dataclass
class FoldResult:
    """What :func:`train_fold` returns.

    Attributes:
        model: the head with the best epoch's weights, in eval mode.
        history: one dict per epoch (``epoch``, ``train/loss``, ``train/lr``, ``train/padding`` (padding rows
            per real instance row in the training batches), ``train/seconds`` (wall-clock of the training pass,
            collation included, validation excluded), ``val/loss``, ``val/<metric>``).
        best_epoch: epoch whose weights were restored (see :func:`improves`); monitor: the metric actually monitored
            (``val/loss`` when the validation set holds one class); stopped_early: patience ran out.
        val: predictions of the restored model on the validation bags (None without validation bags).
    """

    model: nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    monitor: str
    stopped_early: bool
    val: Predictions | None


def train_fold(
    build_model: Callable[[], nn.Module],
    train: Sequence[Bag],
    val: Sequence[Bag],
    n_classes: int,
    config: TrainConfig,
    callbacks: Sequence[EpochCallback] = (),
    objective: Objective | None = None,
) -> FoldResult:
    """Train one fold's MIL head.

    Args:
        build_model: returns a fresh head (called after seeding, so its initial weights repeat);
            ``forward(x [B, N, D], mask [B, N], label [B]) -> {"logits", "attention", "aux_loss"}``.
        train, val: bags; ``val`` may be empty (no early stopping, the last epoch is kept).
        n_classes: number of classes ``C`` (with an objective: its ``n_outputs``).
        config: hyper-parameters; callbacks: called as ``callback(epoch, metrics)`` after each epoch.
        objective: survival / regression loss (:mod:`slidemil.pipeline.kinds.objectives`); None: cross-entropy.
            With one, the head gets no label (CLAM's and DSMIL's auxiliary losses are class-based), class
            balancing is off, and ``monitor = val/auroc`` becomes the objective's ``monitor``.

    Raises:
        NonFiniteLossError: NaN/inf loss, naming the slides of that batch.
        ValueError: no training bags.
    """
    if not train:
        raise ValueError("no training bags")
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = build_model().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    scheduler = _warmup_cosine(optimizer, steps_per_epoch * config.warmup_epochs, steps_per_epoch * config.epochs)
    class_weight, sample_weight = None, None
    if objective is None:
        labels = torch.tensor([bag.label for bag in train])
        counts = torch.bincount(labels, minlength=n_classes).float()
        if config.class_balance == "weights":
            class_weight = torch.where(counts > 0, len(train) / (n_classes * counts.clamp(min=1)), 1.0).to(device)
        sample_weight = (1.0 / counts.clamp(min=1))[labels] if config.class_balance == "sampler" else None
    lengths = torch.tensor([bag.features.shape[0] for bag in train])  # rows a bag brings to a batch (after the cap)
    if config.max_instances > 0:
        lengths = lengths.clamp(max=config.max_instances)

    monitor = config.monitor
    if objective is not None:
        monitor = objective.monitor if monitor == "val/auroc" else monitor
    elif monitor == "val/auroc" and len({bag.label for bag in val}) < 2:
        monitor = "val/loss"  # AUROC undefined on a one-class validation set
    best, best_epoch, best_state, since_best = None, 0, None, 0
    history: list[dict[str, float]] = []
    stopped_early = False
    for epoch in range(config.epochs):
        model.train()
        if sample_weight is not None:
            order = torch.multinomial(sample_weight, len(train), replacement=True, generator=generator)
        else:
            order = torch.randperm(len(train), generator=generator)
        batches = length_bucketed_batches(order, lengths, config.batch_size, config.bucket_batches, generator)
        total, seen, real, padded = 0.0, 0, 0, 0
        start = time.perf_counter()
        for indices in batches:
            batch = [train[i] for i in indices]
            x, mask = pad_bags([_cap(bag.features, config.max_instances, generator) for bag in batch])
            n_real = int(mask.sum())
            real, padded = real + n_real, padded + mask.numel() - n_real
            if objective is None:
                y = torch.tensor([bag.label for bag in batch], device=device)
            else:
                y = objective.target_tensor([bag.label for bag in batch]).to(device)
            with _autocast(device, config.amp):
                out = model(x.to(device, non_blocking=True), mask.to(device, non_blocking=True),
                            label=y if objective is None else None)
            if objective is None:
                loss = nn.functional.cross_entropy(out["logits"].float(), y, weight=class_weight)
            else:
                loss = objective.loss(out["logits"].float(), y)
            if out.get("aux_loss") is not None:
                loss = config.bag_weight * loss + (1.0 - config.bag_weight) * out["aux_loss"].float()
            if not torch.isfinite(loss):
                raise NonFiniteLossError(epoch, [bag.slide_id for bag in batch], float(loss.detach()))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(batch)  # float() waits for the device: the timing below is real
            seen += len(batch)
        seconds = time.perf_counter() - start
        metrics = {"epoch": epoch, "train/loss": total / seen, "train/lr": optimizer.param_groups[0]["lr"],
                   "train/padding": padded / real, "train/seconds": seconds}
        if val:
            metrics.update(_val_metrics(predict(model, val, config.batch_size, config.device, config.amp, objective),
                                        objective))
            if epoch == config.warmup_epochs:
                # selection restarts after the warm-up (lr ramping up from lr/100): a warm-up epoch is
                # kept only when training ends within the warm-up
                best = None
            if improves(metrics, best, monitor):
                best, best_epoch, since_best = metrics, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                since_best += 1
        else:
            best_epoch = epoch
        history.append(metrics)
        for callback in callbacks:
            callback(epoch, metrics)
        if val and config.patience > 0 and since_best >= config.patience:
            stopped_early = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    val_pred = predict(model, val, config.batch_size, config.device, config.amp, objective) if val else None
    return FoldResult(model, history, best_epoch, monitor, stopped_early, val_pred)


class EpochProgress:
    """An epoch callback drawing a tqdm bar over a fold's epochs with the monitored metric, e.g.
    ``abmil fold 2: 40%|████  | 8/20 [00:12, val/auroc=0.812, train/loss=0.41]``.

    Use as a context manager around :func:`train_fold` so the bar closes after early stopping too.
    ``file``: where tqdm draws (default stderr).
    """

    def __init__(self, total_epochs: int, desc: str, monitor: str, file=None) -> None:
        from tqdm import tqdm

        self.monitor = monitor
        # mininterval 0: an epoch takes seconds, so every epoch is drawn (tqdm would skip fast ones)
        self.bar = tqdm(total=total_epochs, desc=desc, unit="epoch", leave=False, file=file, dynamic_ncols=True,
                        mininterval=0)

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        shown = {k: f"{metrics[k]:.3f}" for k in (self.monitor, "train/loss") if k in metrics}
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(1)

    def __enter__(self) -> EpochProgress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.bar.close()


def improves(metrics: dict[str, float], best: dict[str, float] | None, monitor: str) -> bool:
    """Whether an epoch's validation ``metrics`` beat the best epoch's so far (``best``; None: none yet).

    Better ``monitor`` wins (``val/auroc`` higher, ``val/loss`` lower); values within :data:`TIE` are a tie,
    won by the lower ``val/loss``. AUROC ties are the rule on small validation sets (2 slides: AUROC is 0,
    0.5 or 1), where a strict comparison would keep the first epoch that saturates it, however undertrained.
    """
    if best is None:
        return True
    gain = (metrics[monitor] - best[monitor]) * (1.0 if MONITORS[monitor] == "max" else -1.0)
    if abs(gain) > TIE:
        return gain > 0
    return metrics["val/loss"] < best["val/loss"]


def length_bucketed_batches(
    order: torch.Tensor, lengths: torch.Tensor, batch_size: int, bucket_batches: int, generator: torch.Generator
) -> list[list[int]]:
    """Cut a shuffled (or sampled) bag order into mini-batches of bags of similar length.

    Windows of ``bucket_batches × batch_size`` consecutive entries of ``order`` are sorted by bag length
    (stable sort), cut into batches of ``batch_size``, and the batches of all windows are shuffled with
    ``generator``, so that a batch pads to little more than its own bags while the epoch stays random. Every
    entry of ``order`` lands in exactly one batch; the number of batches is ``ceil(len(order) / batch_size)``.
    ``bucket_batches = 0`` or ``batch_size = 1`` gives plain consecutive cuts of ``order`` (nothing to save).

    Length grouping as in Hugging Face's ``LengthGroupedSampler`` (mega-batches of 50 batches); written here
    because no dependency of the project ships one for plain index lists and it takes a dozen lines.

    Args:
        order: ``[n]`` long, indices into the bags (repeats allowed, e.g. a class-balanced sample).
        lengths: ``[n_bags]`` instance count of each bag as it enters a batch.
        batch_size: bags per batch; bucket_batches: window size in batches; generator: seeds the batch shuffle.
    """
    if bucket_batches <= 0 or batch_size <= 1:
        return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    window = bucket_batches * batch_size
    batches = []
    for first in range(0, len(order), window):
        chunk = order[first : first + window]
        chunk = chunk[torch.sort(lengths[chunk], stable=True).indices]
        batches += [chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


class BagProbabilities(nn.Module):
    """A trained head for serving (MLflow model): whole bags ``[B, N, D]`` (no padding) → probabilities ``[B, C]``."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)  # (B, N)
        return self.head(x, mask)["logits"].softmax(-1)  # (B, C)


@torch.no_grad()
def predict(
    model: nn.Module, bags: Sequence[Bag], batch_size: int = 4, device: str = "cpu", amp: bool = True,
    objective: Objective | None = None,
) -> Predictions:
    """Class probabilities (or an objective's prediction) and attention of whole bags (no instance cap), in eval mode.

    Returns ``proba [n, C]`` (softmax of the logits; with ``objective``: ``objective.predict(raw)``), ``raw``
    logits, and one attention vector ``[N_i]`` per bag; for heads with per-class attention ``[B, C, N]`` the
    predicted class's row is kept (with an objective: the mean over rows); None for heads that return no attention.

    Raises:
        ValueError: non-finite outputs, naming the slides (e.g. NaN features).
    """
    model.eval()
    dev = torch.device(device)
    raws, attentions = [], []
    for start in range(0, len(bags), batch_size):
        batch = bags[start : start + batch_size]
        x, mask = pad_bags([bag.features for bag in batch])
        with _autocast(dev, amp):
            out = model(x.to(dev), mask.to(dev))
        raw = out["logits"].float()  # (B, C)
        bad = (~torch.isfinite(raw.softmax(-1)).all(-1)).nonzero().flatten().tolist()
        if bad:
            raise ValueError(f"non-finite outputs for slides {[batch[i].slide_id for i in bad]}; "
                             "check their features for NaN/inf")
        raws.append(raw.cpu())
        attention = out.get("attention")
        if attention is None:  # a head without attention
            attentions += [None] * len(batch)
            continue
        attention = attention.float()
        if attention.dim() == 3 and objective is not None:  # (B, K, N) → mean over the rows (B, N)
            attention = attention.mean(1)
        elif attention.dim() == 3:  # (B, C, N) → predicted class's row (B, N)
            attention = attention[torch.arange(len(batch)), raw.argmax(-1)]
        for i, bag in enumerate(batch):
            attentions.append(attention[i, : bag.features.shape[0]].cpu().numpy())
    raw = torch.cat(raws).numpy().astype(float) if raws else np.zeros((0, 0))
    if objective is None:
        proba = torch.cat(raws).softmax(-1).numpy().astype(float) if raws else np.zeros((0, 0))
    else:
        proba = objective.predict(raw)
    return Predictions(
        slide_ids=[bag.slide_id for bag in bags],
        y_true=np.array([bag.label for bag in bags], dtype=int if objective is None else float),
        proba=proba,
        attention=attentions,
        raw=raw,
    )


def _val_metrics(pred: Predictions, objective: Objective | None = None) -> dict[str, float]:
    if objective is not None:
        return {f"val/{k}": v for k, v in objective.val_metrics(pred.y_true, pred.raw).items()}
    proba = np.clip(pred.proba, 1e-7, 1.0)
    loss = float(-np.log(proba[np.arange(len(pred.y_true)), pred.y_true]).mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OneClassWarning)
        scores = classification_metrics(pred.y_true, pred.proba)
    return {"val/loss": loss, **{f"val/{k}": v for k, v in scores.items()}}


def _cap(features: torch.Tensor, max_instances: int, generator: torch.Generator) -> torch.Tensor:
    """A random subset of ``max_instances`` rows of ``[N, D]`` (kept in slide order); all rows if fewer."""
    n = features.shape[0]
    if max_instances <= 0 or n <= max_instances:
        return features
    keep = torch.randperm(n, generator=generator)[:max_instances].sort().values
    return features[keep.to(features.device)]


def _warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Linear warm-up from lr/100 over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    warmup_steps = min(warmup_steps, total_steps - 1)
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - max(warmup_steps, 0)))
    if warmup_steps <= 0:
        return cosine
    warm = LinearLR(optimizer, start_factor=0.01, total_iters=warmup_steps)
    return SequentialLR(optimizer, [warm, cosine], milestones=[warmup_steps])


def _autocast(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when ``amp``; a no-op context elsewhere (CPU runs stay fp32 and exact)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")
