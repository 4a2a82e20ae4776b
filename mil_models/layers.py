"""Building blocks shared by the MIL heads: bag validation, masked softmax / pooling, attention nets.

A batch of bags is always padded explicitly: ``x [B, N, D]`` plus a boolean ``mask [B, N]`` (True = a real
instance). Padded instances never change a head's output (see :func:`masked_softmax`).
"""

from __future__ import annotations

import torch
from torch import nn


def check_bags(x: torch.Tensor, mask: torch.Tensor | None, in_dim: int) -> torch.Tensor:
    """Validate a padded batch of bags and return its mask.

    Args:
        x: instance features ``[B, N, D]`` (float).
        mask: ``[B, N]`` bool, True for real instances; ``None`` means every instance is real.
        in_dim: the feature size ``D`` the head was built for.

    Returns:
        The mask ``[B, N]`` bool on ``x``'s device.

    Raises:
        ValueError: ``x`` is not ``[B, N, D]`` with ``D == in_dim``, the mask's shape or dtype is wrong, or a
            bag has no instance (``N == 0`` or its mask is all False) — drop empty slides before batching.
    """
    if x.dim() != 3 or not x.is_floating_point():
        raise ValueError(f"bags must be a float tensor [B, N, D], got {x.dtype} of shape {tuple(x.shape)}")
    if x.shape[2] != in_dim:
        raise ValueError(
            f"bags have {x.shape[2]}-d instances but the head was built for in_dim={in_dim}; "
            "build it with the features' embed_dim"
        )
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    elif mask.dtype != torch.bool or mask.shape != x.shape[:2]:
        raise ValueError(
            f"mask must be bool [B, N] = {list(x.shape[:2])}, got {mask.dtype} {list(mask.shape)}"
        )
    if x.shape[1] == 0:
        raise ValueError("empty bag: N == 0 instances; a slide without patches cannot be classified, drop it")
    empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"empty bag(s) at batch index {empty}: mask is all False; drop slides without patches"
        )
    return mask


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis where ``mask`` is True; masked entries get exactly 0.

    Args:
        scores: ``[..., N]`` raw scores.
        mask: bool, broadcastable to ``scores``; every row must hold at least one True.

    Returns:
        Weights of ``scores``' shape summing to 1 over the last axis.
    """
    return scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real instances: ``h [B, N, H]``, ``mask [B, N]`` → ``[B, H]``."""
    weights = mask.to(h.dtype)  # (B, N)
    return torch.einsum("bn,bnh->bh", weights, h) / weights.sum(dim=1, keepdim=True)


def masked_max(h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Max over the real instances: ``h [B, N, H]``, ``mask [B, N]`` → values and argmax indices ``[B, H]``."""
    return h.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(dim=1)


def instance_embedding(in_dim: int, hidden_dim: int, dropout: float) -> nn.Sequential:
    """The per-instance fully connected layer of attention MIL: Linear → ReLU → Dropout, ``[.., D] → [.., H]``."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))


class AttentionNet(nn.Module):
    """Attention scores of attention-based MIL (Ilse et al., ICML 2018), plain or gated.

    ``score = w^T tanh(V h)`` or, gated, ``w^T (tanh(V h) ⊙ sigmoid(U h))``, with ``n_out`` score rows (one per
    branch, e.g. per class in CLAM-MB). Input ``h [B, N, H]`` → raw (unnormalised) scores ``[B, n_out, N]``.
    """

    def __init__(
        self, hidden_dim: int, attn_dim: int, n_out: int = 1, gated: bool = False, dropout: float = 0.0
    ):
        super().__init__()
        self.tanh_branch = nn.Sequential(nn.Linear(hidden_dim, attn_dim), nn.Tanh(), nn.Dropout(dropout))
        self.gate = (
            nn.Sequential(nn.Linear(hidden_dim, attn_dim), nn.Sigmoid(), nn.Dropout(dropout))
            if gated
            else None
        )
        self.score = nn.Linear(attn_dim, n_out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a = self.tanh_branch(h)  # (B, N, A)
        if self.gate is not None:
            a = a * self.gate(h)  # (B, N, A)
        return self.score(a).transpose(1, 2)  # (B, n_out, N)
