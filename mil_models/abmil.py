"""Attention-based MIL, plain and gated (Ilse, Tomczak & Welling, ICML 2018)."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from slidemil.mil_models._registry import MIL_MODELS
from slidemil.mil_models.layers import AttentionNet, check_bags, instance_embedding, masked_softmax


class ABMIL(nn.Module):
    """Attention MIL pooling: instances embedded, weighted by a softmax attention, summed, classified.

    Input ``x [B, N, D]``, ``mask [B, N]`` bool → ``logits [B, C]``, ``attention [B, N]`` (softmax weights, 0 on
    padding), ``aux_loss`` None. Permutation invariant. Ilse et al., "Attention-based Deep Multiple Instance
    Learning", ICML 2018.
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden_dim: int = 256,
        attn_dim: int = 128,
        dropout: float = 0.25,
        gated: bool = False,
    ):
        super().__init__()
        self.in_dim = in_dim
        self.embed = instance_embedding(in_dim, hidden_dim, dropout)
        self.attention = AttentionNet(hidden_dim, attn_dim, n_out=1, gated=gated)
        self.classifier = nn.Linear(hidden_dim, n_classes)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, label: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor | None]:
        mask = check_bags(x, mask, self.in_dim)
        h = self.embed(x)  # (B, N, H)
        a = masked_softmax(self.attention(h).squeeze(1), mask)  # (B, N)
        z = torch.einsum("bn,bnh->bh", a, h)  # (B, H)
        return {"logits": self.classifier(z), "attention": a, "aux_loss": None}


MIL_MODELS.register("abmil")(ABMIL)
MIL_MODELS.register("abmil_gated")(partial(ABMIL, gated=True))
