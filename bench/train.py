"""Benchmark: ABMIL training with padded mini-batches of bags vs one bag at a time, side by side.

Synthetic planted-signal bags (``mil_models.synthetic``), the same initial weights and the same bag order
for both, epochs of the two modes interleaved; per mode: mean training-epoch seconds (collation included, validation excluded) and the final
validation AUROC. Prints a table, then one JSON line with every figure.

    .venv/bin/python bench/train.py [--n-bags 500] [--n-instances 2000] [--epochs 2] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from mil_models import create_mil_model, pad_bags
from mil_models.synthetic import PlantedBags, planted_signal_bags


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--n-bags", type=int, default=500, help="bags in all; 20%% are held out for validation"
    )
    parser.add_argument("--n-instances", type=int, default=2000, help="mean bag size; sizes vary ±20%%")
    parser.add_argument("--dim", type=int, default=512, help="instance feature size D")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="bags per padded mini-batch")
    parser.add_argument(
        "--lr",
        type=float,
        default=2e-4,
        help="AdamW learning rate of one-bag training; padded training uses lr × sqrt(batch size)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's own)"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def train_epoch(
    head: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    bags: list[torch.Tensor],
    labels: torch.Tensor,
    order: list[int],
    batch_size: int,
    device: str,
) -> float:
    """One epoch over ``order`` in mini-batches of ``batch_size`` bags (1 = one bag at a time); seconds."""
    head.train()
    start = time.perf_counter()
    for first in range(0, len(order), batch_size):
        idx = order[first : first + batch_size]
        if batch_size == 1:
            x, mask = bags[idx[0]].unsqueeze(0).to(device), None
        else:
            x, mask = pad_bags([bags[i] for i in idx])
            x, mask = x.to(device), mask.to(device)
        loss = F.cross_entropy(head(x, mask)["logits"], labels[idx].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


@torch.no_grad()
def val_auroc(
    head: torch.nn.Module, bags: list[torch.Tensor], labels: torch.Tensor, device: str, batch_size: int = 16
) -> float:
    """AUROC of the positive class over ``bags`` (evaluated in padded batches)."""
    head.eval()
    proba = []
    for first in range(0, len(bags), batch_size):
        x, mask = pad_bags(bags[first : first + batch_size])
        proba.append(head(x.to(device), mask.to(device))["logits"].softmax(dim=1)[:, 1].cpu())
    return float(roc_auc_score(labels.numpy(), torch.cat(proba).numpy()))


def train_both(data: PlantedBags, n_train: int, args: argparse.Namespace) -> dict[str, dict]:
    """Train a fresh ABMIL per mode (same initial weights) on the first ``n_train`` bags.

    The modes take turns epoch by epoch over the same bag order, so load from other processes on a shared
    machine hits both alike. Returns per mode: mean and per-epoch seconds, final val AUROC, learning rate.
    """
    runs = {}
    for mode, batch_size in (("padded", args.batch_size), ("one_bag", 1)):
        torch.manual_seed(args.seed)
        head = create_mil_model("abmil", args.dim, 2).to(args.device)
        lr = args.lr * math.sqrt(batch_size)
        optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
        runs[mode] = {"head": head, "optimizer": optimizer, "batch_size": batch_size, "lr": lr, "seconds": []}
    gen = torch.Generator().manual_seed(args.seed)
    for _ in range(args.epochs):
        order = torch.randperm(n_train, generator=gen).tolist()
        for run in runs.values():
            seconds = train_epoch(
                run["head"], run["optimizer"], data.bags, data.labels, order, run["batch_size"], args.device
            )
            run["seconds"].append(seconds)
    return {
        mode: {
            "epoch_seconds": sum(run["seconds"]) / len(run["seconds"]),
            "epoch_seconds_each": run["seconds"],
            "val_auroc": val_auroc(run["head"], data.bags[n_train:], data.labels[n_train:], args.device),
            "lr": run["lr"],
        }
        for mode, run in runs.items()
    }


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    low, high = round(0.8 * args.n_instances), round(1.2 * args.n_instances)
    data = planted_signal_bags(
        args.n_bags, dim=args.dim, n_instances=(low, high), n_witnesses=(20, 60), shift=4.0, seed=args.seed
    )
    n_train = round(0.8 * args.n_bags)
    results = train_both(data, n_train, args)
    padded, one_bag = results["padded"], results["one_bag"]
    speedup = one_bag["epoch_seconds"] / padded["epoch_seconds"]
    print(
        f"ABMIL on {args.n_bags} bags of {low}-{high} x {args.dim} ({n_train} train), {args.epochs} epochs, "
        f"device {args.device}, {torch.get_num_threads()} CPU threads"
    )
    print(f"{'mode':<24}{'lr':>10}{'epoch s':>10}{'val AUROC':>11}")
    for mode, res in ((f"padded, {args.batch_size} bags/batch", padded), ("one bag at a time", one_bag)):
        print(f"{mode:<24}{res['lr']:>10.2e}{res['epoch_seconds']:>10.2f}{res['val_auroc']:>11.4f}")
    print(f"speed-up padded vs one bag: {speedup:.2f}x")
    print(
        json.dumps(
            {
                "n_bags": args.n_bags,
                "n_train_bags": n_train,
                "n_instances_mean": args.n_instances,
                "dim": args.dim,
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "device": args.device,
                "cpu_threads": torch.get_num_threads(),
                "epoch_seconds_padded": padded["epoch_seconds"],
                "epoch_seconds_one_bag": one_bag["epoch_seconds"],
                "epoch_seconds_padded_each": padded["epoch_seconds_each"],
                "epoch_seconds_one_bag_each": one_bag["epoch_seconds_each"],
                "speedup_padded_vs_one_bag": speedup,
                "val_auroc_padded": padded["val_auroc"],
                "val_auroc_one_bag": one_bag["val_auroc"],
            }
        )
    )


if __name__ == "__main__":
    main()
