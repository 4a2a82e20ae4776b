"""Benchmark of the product trainer: ABMIL with padded, length-bucketed mini-batches vs one bag at a time.

Both runs call :func:`pipeline.trainer.train_fold` on the same synthetic planted-signal bags
(``mil_models.synthetic``, sizes drawn uniformly from ``--min-instances``..``--max-instances``), with the same
seed (same initial weights), the same epochs and no early stopping; only ``batch_size`` and ``lr`` differ. The
lr of the padded run is ``lr × sqrt(batch size)``: the square-root scaling rule for Adam-type optimisers
(Malladi et al., "On the SDEs and Scaling Rules for Adaptive Gradient Algorithms", NeurIPS 2022), since a
batch of B bags takes B× fewer optimiser steps with a less noisy gradient.

Per run: mean training-epoch seconds (the trainer's ``train/seconds``: collation included, validation
excluded), the final (last-epoch) validation AUROC and the padding (padding rows per real instance row). Also
the padding random batches of the same size would have, and the seconds per epoch spent copying bags into
the padded tensor (``pad_bags``) alone. Prints a table, then as the last line one JSON object with every figure.

    .venv/bin/python bench/train.py [--n-bags 500] [--epochs 2] [--device cpu] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from slidemil.mil_models import create_mil_model, pad_bags
from slidemil.mil_models.synthetic import planted_signal_bags
from slidemil.pipeline.trainer import Bag, FoldResult, TrainConfig, length_bucketed_batches, train_fold


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-bags", type=int, default=500, help="bags in all; 20%% are held out for validation")
    parser.add_argument("--min-instances", type=int, default=1000, help="smallest bag size N_i")
    parser.add_argument("--max-instances", type=int, default=3000, help="largest bag size N_i")
    parser.add_argument("--dim", type=int, default=512, help="instance feature size D")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="bags per padded mini-batch")
    parser.add_argument("--lr", type=float, default=2e-4,
                        help="lr of one-bag training (train.lr default); padded uses lr × sqrt(batch size)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's own)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def padding_of(batches: list[list[int]], lengths: torch.Tensor) -> float:
    """Padding rows per real instance row of ``batches`` (bag indices) of bags with ``lengths``."""
    real = sum(int(lengths[b].sum()) for b in batches)
    return sum(int(lengths[b].max()) * len(b) for b in batches) / real - 1.0


def collate_seconds(train: list[Bag], batches: list[list[int]]) -> float:
    """Seconds to copy ``batches`` of bags into padded tensors with ``pad_bags`` (the trainer's collation)."""
    start = time.perf_counter()
    for batch in batches:
        pad_bags([train[i].features for i in batch])
    return time.perf_counter() - start


def run(train: list[Bag], val: list[Bag], batch_size: int, lr: float, args: argparse.Namespace) -> FoldResult:
    """One :func:`train_fold` of ABMIL (no early stopping, no instance cap: whole bags)."""
    config = TrainConfig(epochs=args.epochs, lr=lr, batch_size=batch_size, max_instances=0, patience=0,
                         seed=args.seed, device=args.device)
    return train_fold(lambda: create_mil_model("abmil", in_dim=args.dim, n_classes=2), train, val, 2, config)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = planted_signal_bags(args.n_bags, dim=args.dim, n_instances=(args.min_instances, args.max_instances),
                               n_witnesses=(20, 60), shift=4.0, seed=args.seed)
    bags = [Bag(f"bag{i}", x, int(y)) for i, (x, y) in enumerate(zip(data.bags, data.labels, strict=True))]
    n_train = round(0.8 * args.n_bags)
    train, val = bags[:n_train], bags[n_train:]

    lengths = torch.tensor([bag.features.shape[0] for bag in train])
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(args.seed))
    bucketed = length_bucketed_batches(order, lengths, args.batch_size, TrainConfig().bucket_batches,
                                       torch.Generator().manual_seed(args.seed))
    random_batches = length_bucketed_batches(order, lengths, args.batch_size, 0, torch.Generator())
    one_bag_batches = length_bucketed_batches(order, lengths, 1, 0, torch.Generator())

    lr_padded = args.lr * math.sqrt(args.batch_size)
    run(train[:4], val[:2], 2, args.lr, argparse.Namespace(**{**vars(args), "epochs": 1}))  # warm-up, not timed
    results = {}
    for mode, batch_size, lr in (("padded", args.batch_size, lr_padded), ("one_bag", 1, args.lr)):
        start = time.perf_counter()
        result = run(train, val, batch_size, lr, args)
        seconds = [h["train/seconds"] for h in result.history]
        results[mode] = {
            "lr": lr,
            "epoch_seconds": sum(seconds) / len(seconds),
            "epoch_seconds_each": seconds,
            "fold_seconds": time.perf_counter() - start,
            "val_auroc": result.history[-1]["val/auroc"],
            "padding": sum(h["train/padding"] for h in result.history) / len(result.history),
        }
    padded, one_bag = results["padded"], results["one_bag"]
    figures = {
        "n_bags": args.n_bags,
        "n_train_bags": n_train,
        "instances_range": [args.min_instances, args.max_instances],
        "instances_mean": float(lengths.float().mean()),
        "dim": args.dim,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "bucket_batches": TrainConfig().bucket_batches,
        "device": args.device,
        "cpu_threads": torch.get_num_threads(),
        "lr_padded": lr_padded,
        "lr_one_bag": args.lr,
        "epoch_seconds_padded": padded["epoch_seconds"],
        "epoch_seconds_one_bag": one_bag["epoch_seconds"],
        "epoch_seconds_padded_each": padded["epoch_seconds_each"],
        "epoch_seconds_one_bag_each": one_bag["epoch_seconds_each"],
        "fold_seconds_padded": padded["fold_seconds"],
        "fold_seconds_one_bag": one_bag["fold_seconds"],
        "speedup_padded_vs_one_bag": one_bag["epoch_seconds"] / padded["epoch_seconds"],
        "val_auroc_padded": padded["val_auroc"],
        "val_auroc_one_bag": one_bag["val_auroc"],
        "padding_fraction": padded["padding"],
        "padding_fraction_random_batches": padding_of(random_batches, lengths),
        "collate_seconds_per_epoch_padded": collate_seconds(train, bucketed),
        "collate_seconds_per_epoch_one_bag": collate_seconds(train, one_bag_batches),
    }
    print(f"ABMIL on {args.n_bags} bags of {args.min_instances}-{args.max_instances} x {args.dim} ({n_train} train, "
          f"{args.n_bags - n_train} val), {args.epochs} epochs, device {args.device}, "
          f"{torch.get_num_threads()} CPU threads; pipeline.trainer.train_fold")
    print(f"{'':<28}{'padded, ' + str(args.batch_size) + ' bags/batch':>24}{'one bag at a time':>20}")
    rows = (
        ("lr", f"{lr_padded:.2e}", f"{args.lr:.2e}"),
        ("training epoch, s", f"{padded['epoch_seconds']:.2f}", f"{one_bag['epoch_seconds']:.2f}"),
        ("  of it pad_bags copies, s", f"{figures['collate_seconds_per_epoch_padded']:.2f}",
         f"{figures['collate_seconds_per_epoch_one_bag']:.2f}"),
        ("whole fold incl. val, s", f"{padded['fold_seconds']:.1f}", f"{one_bag['fold_seconds']:.1f}"),
        ("final val AUROC", f"{padded['val_auroc']:.4f}", f"{one_bag['val_auroc']:.4f}"),
        ("padding rows / real rows", f"{padded['padding']:.3f}", "0"),
    )
    for name, a, b in rows:
        print(f"{name:<28}{a:>24}{b:>20}")
    print(f"speed-up padded vs one bag: {figures['speedup_padded_vs_one_bag']:.2f}x; random (unbucketed) batches "
          f"would pad {figures['padding_fraction_random_batches']:.3f} rows per real row")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
