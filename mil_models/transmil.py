"""TransMIL: transformer MIL with the PPEG positional encoding (Shao et al., NeurIPS 2021)."""

from __future__ import annotations

import torch
from torch import nn

from slidemil.mil_models._registry import MIL_MODELS
from slidemil.mil_models.attention import MaskedSelfAttention
from slidemil.mil_models.layers import check_bags


class PPEG(nn.Module):
    """Pyramid position encoding generator: ``x + conv7(x) + conv5(x) + conv3(x)`` (depth-wise) on the
    square grid of each bag's tokens.

    ``tokens [B, S², H]`` hold bag ``b``'s ``side[b]²`` grid tokens first. Each grid is placed in the top-left
    corner of a zero ``S × S`` canvas, so zero padding around a small grid is the same as the canvas' zeros.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim) for k in (7, 5, 3))

    def forward(self, tokens: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        b, length, dim = tokens.shape
        s = int(side.max())  # length == s * s
        j = torch.arange(length, device=tokens.device)
        valid = j < side * side  # (B, L)
        pos = torch.where(
            valid, (j // side) * s + j % side, length
        )  # (B, L) canvas index, unused → spare slot
        index = pos.unsqueeze(-1).expand(b, length, dim)
        canvas = tokens.new_zeros(b, length + 1, dim).scatter(1, index, tokens)[:, :length]  # (B, S², H)
        grid = canvas.transpose(1, 2).reshape(b, dim, s, s)  # (B, H, S, S)
        grid = grid + sum(conv(grid) for conv in self.convs)
        out = grid.flatten(2).transpose(1, 2).gather(1, index.clamp(max=length - 1))  # (B, L, H)
        return torch.where(valid.unsqueeze(-1), out, tokens)


class TransLayer(nn.Module):
    """Pre-norm residual attention block: ``x + attention(LayerNorm(x))``; returns it and the class-token row."""

    def __init__(self, dim: int, n_heads: int, n_landmarks: int | None, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = MaskedSelfAttention(dim, n_heads=n_heads, n_landmarks=n_landmarks, dropout=dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, first_row = self.attention(self.norm(x), mask)
        return x + out, first_row


class TransMIL(nn.Module):
    """Transformer MIL: embed → class token + square grid of instances → attention → PPEG → attention → class
    token → classifier.

    Each bag's ``n`` real instances are laid on a ``ceil(√n)²`` grid, filled up by repeating its first
    instances (as TransMIL does); bags of a batch are padded and masked after that, so a padded batch equals
    its bags one at a time. Not permutation invariant (PPEG sees instance order). ``attention="nystrom"``
    (Nyström attention with ``hidden_dim // 2`` landmarks, as in TransMIL) or ``"full"`` (exact softmax);
    ``n_heads`` defaults to ``hidden_dim // 64`` (TransMIL: 8 heads of 64 for 512).

    Input ``x [B, N, D]``, ``mask [B, N]`` bool → ``logits [B, C]``, ``attention [B, N]`` (the class token's
    last-layer attention summed over an instance's grid copies, head mean; 0 on padding), ``aux_loss`` None.
    Shao et al., "TransMIL: Transformer based Correlated Multiple Instance Learning for Whole Slide Image
    Classification", NeurIPS 2021.
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden_dim: int = 512,
        dropout: float = 0.1,
        n_heads: int | None = None,
        attention: str = "nystrom",
    ):
        super().__init__()
        if attention not in ("nystrom", "full"):
            raise ValueError(f"attention must be 'nystrom' or 'full', got {attention!r}")
        n_heads = n_heads or max(1, hidden_dim // 64)  # head size 64, as TransMIL's 8 heads of 512
        n_landmarks = hidden_dim // 2 if attention == "nystrom" else None
        self.in_dim = in_dim
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU())
        self.cls_token = nn.Parameter(torch.randn(1, 1, hidden_dim))
        self.layer_1 = TransLayer(hidden_dim, n_heads, n_landmarks, dropout)
        self.ppeg = PPEG(hidden_dim)
        self.layer_2 = TransLayer(hidden_dim, n_heads, n_landmarks, dropout)
        self.norm = nn.LayerNorm(hidden_dim)
        self.classifier = nn.Linear(hidden_dim, n_classes)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, label: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor | None]:
        mask = check_bags(x, mask, self.in_dim)
        b, n_max = mask.shape
        h = self.embed(x)  # (B, N, H)
        n = mask.sum(dim=1, keepdim=True)  # (B, 1)
        side = torch.ceil(torch.sqrt(n.double())).long()  # (B, 1)
        length = int(side.max()) ** 2
        order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)  # (B, N) real instances first
        wrapped = torch.arange(length, device=x.device) % n  # (B, L) grid filled up with the first instances
        source = order.gather(1, wrapped)  # (B, L) instance behind each token
        tokens = h.gather(1, source.unsqueeze(-1).expand(-1, -1, h.shape[2]))  # (B, L, H)
        token_mask = torch.arange(length, device=x.device) < side * side  # (B, L)
        seq = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)  # (B, 1 + L, H)
        seq_mask = torch.cat([token_mask.new_ones(b, 1), token_mask], dim=1)  # (B, 1 + L)
        seq, _ = self.layer_1(seq, seq_mask)
        seq = torch.cat([seq[:, :1], self.ppeg(seq[:, 1:], side)], dim=1)
        seq, cls_row = self.layer_2(seq, seq_mask)  # cls_row (B, 1 + L)
        logits = self.classifier(self.norm(seq[:, 0]))
        token_attention = cls_row[:, 1:].masked_fill(~token_mask, 0.0)  # (B, L)
        attention = token_attention.new_zeros(b, n_max).scatter_add(1, source, token_attention)  # (B, N)
        return {"logits": logits, "attention": attention, "aux_loss": None}


MIL_MODELS.register("transmil")(TransMIL)
