"""Mean- and max-pooling MLP baselines: embed each instance, pool over the bag, classify."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from slidemil.mil_models._registry import MIL_MODELS
from slidemil.mil_models.layers import check_bags, instance_embedding, masked_max, masked_mean


class PoolingMLP(nn.Module):
    """Instance MLP → mean or max over the bag → linear classifier (the usual MIL baselines).

    Input ``x [B, N, D]``, ``mask [B, N]`` bool → ``logits [B, C]``, ``attention [B, N]`` (mean: ``1/n`` per
    instance; max: share of hidden units whose maximum the instance holds; 0 on padding), ``aux_loss`` None.
    Permutation invariant.
    """

    def __init__(
        self, in_dim: int, n_classes: int, hidden_dim: int = 256, dropout: float = 0.25, pool: str = "mean"
    ):
        super().__init__()
        if pool not in ("mean", "max"):
            raise ValueError(f"pool must be 'mean' or 'max', got {pool!r}")
        self.in_dim = in_dim
        self.pool = pool
        self.embed = instance_embedding(in_dim, hidden_dim, dropout)
        self.classifier = nn.Linear(hidden_dim, n_classes)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, label: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor | None]:
        mask = check_bags(x, mask, self.in_dim)
        h = self.embed(x)  # (B, N, H)
        if self.pool == "mean":
            z = masked_mean(h, mask)  # (B, H)
            attention = mask.to(h.dtype) / mask.sum(dim=1, keepdim=True)  # (B, N)
        else:
            z, argmax = masked_max(h, mask)  # (B, H), (B, H)
            attention = F.one_hot(argmax, x.shape[1]).to(h.dtype).mean(dim=1)  # (B, N)
        return {"logits": self.classifier(z), "attention": attention, "aux_loss": None}


MIL_MODELS.register("mean_mlp")(partial(PoolingMLP, pool="mean"))
MIL_MODELS.register("max_mlp")(partial(PoolingMLP, pool="max"))
