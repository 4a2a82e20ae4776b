"""Dual-stream MIL (Li, Li & Eliceiri, CVPR 2021)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from slidemil.mil_models._registry import MIL_MODELS
from slidemil.mil_models.layers import check_bags, instance_embedding, masked_softmax


class DSMIL(nn.Module):
    """Instance classifier (max-pooling stream) + critical-instance attention aggregation (bag stream).

    Per class the instance with the highest instance score is the critical instance; every instance is
    weighted by the similarity of its query to the critical instance's query (softmax over the bag), the
    weighted sums are classified together (DSMIL's full-width Conv1d, i.e. one linear layer). ``logits`` are
    the mean of the two streams' logits, as DSMIL averages them for prediction; with ``label`` given,
    ``aux_loss`` is the cross-entropy of the max-pooling stream (DSMIL trains both streams).

    Input ``x [B, N, D]``, ``mask [B, N]`` bool → ``logits [B, C]``, ``attention [B, C, N]`` (softmax
    weights, 0 on padding). Permutation invariant. Li et al., "Dual-stream Multiple Instance Learning
    Network for Whole Slide Image Classification with Self-supervised Contrastive Learning", CVPR 2021.
    """

    def __init__(
        self, in_dim: int, n_classes: int, hidden_dim: int = 256, attn_dim: int = 128, dropout: float = 0.25
    ):
        super().__init__()
        self.in_dim = in_dim
        self.embed = instance_embedding(in_dim, hidden_dim, dropout)
        self.instance_classifier = nn.Linear(hidden_dim, n_classes)
        self.query = nn.Sequential(
            nn.Linear(hidden_dim, attn_dim), nn.ReLU(), nn.Linear(attn_dim, attn_dim), nn.Tanh()
        )
        self.bag_classifier = nn.Linear(n_classes * hidden_dim, n_classes)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, label: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor | None]:
        mask = check_bags(x, mask, self.in_dim)
        h = self.embed(x)  # (B, N, H)
        instance_logits = self.instance_classifier(h).masked_fill(
            ~mask.unsqueeze(-1), float("-inf")
        )  # (B, N, C)
        max_logits, critical = instance_logits.max(dim=1)  # (B, C), (B, C)
        q = self.query(h)  # (B, N, A)
        q_critical = q.gather(1, critical.unsqueeze(-1).expand(-1, -1, q.shape[2]))  # (B, C, A)
        scores = torch.einsum("bca,bna->bcn", q_critical, q) / math.sqrt(q.shape[2])  # (B, C, N)
        a = masked_softmax(scores, mask.unsqueeze(1))  # (B, C, N)
        bag = torch.einsum("bcn,bnh->bch", a, h)  # (B, C, H)
        bag_logits = self.bag_classifier(bag.flatten(1))  # (B, C)
        aux_loss = None if label is None else F.cross_entropy(max_logits, label)
        return {"logits": 0.5 * (bag_logits + max_logits), "attention": a, "aux_loss": aux_loss}


MIL_MODELS.register("dsmil")(DSMIL)
