"""Masked multi-head self-attention, exact or Nyström-approximated, for TransMIL.

Written here rather than taken from the ``nystrom-attention`` package: that package is unmaintained, and
its landmarks are means over segments of the *padded* sequence (and its pseudo-inverse is scaled by a
maximum over the whole batch), so a padded batch would not give the same output as its bags one at a time.
Here each bag's landmarks depend only on its own real tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slidemil.mil_models.layers import masked_softmax


def newton_schulz_pinv(a: torch.Tensor, iterations: int) -> torch.Tensor:
    """Iterative Moore–Penrose pseudo-inverse of square matrices ``a [..., m, m]`` (Razavi et al. 2014).

    The order-3 iteration used by Nyströmformer (Xiong et al., AAAI 2021); the start ``a^T / (‖a‖_1 ‖a‖_∞)``
    is scaled per matrix, never across the batch.
    """
    abs_a = a.abs()
    scale = abs_a.sum(dim=-1).amax(dim=-1) * abs_a.sum(dim=-2).amax(dim=-1)  # (...)
    z = a.transpose(-1, -2) / scale[..., None, None]
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


class MaskedSelfAttention(nn.Module):
    """Multi-head self-attention over ``x [B, L, dim]`` whose real tokens are a prefix given by ``mask [B, L]``.

    ``n_landmarks=None``: exact softmax attention. Otherwise Nyström attention (Xiong et al., "Nyströmformer",
    AAAI 2021): each bag's ``n`` real tokens are cut into ``ceil(n / ceil(n / n_landmarks))`` consecutive
    segments whose mean queries/keys are the landmarks; ``softmax(Q K_l^T) pinv(softmax(Q_l K_l^T))
    softmax(Q_l K^T) V``. As in TransMIL's attention layer, a depth-wise convolution of the values along the
    sequence (kernel ``residual_kernel``) is added. Padded tokens are neither keys nor landmarks and read as
    zeros to the convolution, so a padded batch equals its bags one at a time.

    Returns the output ``[B, L, dim]`` and the first token's attention row ``[B, L]`` (mean over heads; for
    TransMIL the class token's attention to each token).
    """

    def __init__(
        self,
        dim: int,
        n_heads: int = 8,
        n_landmarks: int | None = 256,
        pinv_iterations: int = 6,
        residual_kernel: int = 33,
        dropout: float = 0.0,
    ):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} must be a multiple of n_heads {n_heads}")
        self.n_heads = n_heads
        self.n_landmarks = n_landmarks
        self.pinv_iterations = pinv_iterations
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))
        self.residual = nn.Conv2d(
            n_heads,
            n_heads,
            (residual_kernel, 1),
            padding=(residual_kernel // 2, 0),
            groups=n_heads,
            bias=False,
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, length, dim = x.shape
        q, k, v = (
            self.qkv(x).view(b, length, 3, self.n_heads, dim // self.n_heads).permute(2, 0, 3, 1, 4)
        )  # (B, h, L, d)
        q = q * q.shape[-1] ** -0.5
        v = v.masked_fill(~mask[:, None, :, None], 0.0)
        key_mask = mask[:, None, None, :]  # (B, 1, 1, L)
        if self.n_landmarks is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, scale=1.0)  # (B, h, L, d)
            first_row = masked_softmax(q[:, :, :1] @ k.transpose(-1, -2), key_mask)  # (B, h, 1, L)
        else:
            out, first_row = self._nystrom(q, k, v, mask)
        out = out + self.residual(v)  # (B, h, L, d)
        out = out.transpose(1, 2).reshape(b, length, dim)
        return self.out(out), first_row[:, :, 0].mean(dim=1)

    def _nystrom(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, h, length, d = q.shape
        n = mask.sum(dim=1, keepdim=True)  # (B, 1)
        seg_len = torch.div(n + self.n_landmarks - 1, self.n_landmarks, rounding_mode="floor")  # (B, 1)
        n_seg = torch.div(n + seg_len - 1, seg_len, rounding_mode="floor")  # (B, 1) landmarks per bag
        m = int(n_seg.max())  # slots beyond a bag's own landmarks are identity blocks: no effect on it
        rank = mask.cumsum(dim=1) - 1  # (B, L) index among the real tokens
        segment = torch.where(
            mask, torch.div(rank, seg_len, rounding_mode="floor"), m
        )  # (B, L), pad → slot m
        index = segment[:, None, :, None].expand(b, h, length, d)
        counts = torch.zeros(b, m + 1, dtype=q.dtype, device=q.device).scatter_add(
            1, segment, mask.to(q.dtype)
        )
        counts = counts[:, None, :m, None].clamp(min=1)  # (B, 1, m, 1)
        q_l = q.new_zeros(b, h, m + 1, d).scatter_add(2, index, q)[:, :, :m] / counts  # (B, h, m, d)
        k_l = k.new_zeros(b, h, m + 1, d).scatter_add(2, index, k)[:, :, :m] / counts  # (B, h, m, d)
        landmark = torch.arange(m, device=q.device) < n_seg  # (B, m)
        lm_cols = landmark[:, None, None, :]  # (B, 1, 1, m)
        kernel_1 = masked_softmax(q @ k_l.transpose(-1, -2), lm_cols)  # (B, h, L, m)
        kernel_2 = masked_softmax(q_l @ k_l.transpose(-1, -2), lm_cols)  # (B, h, m, m)
        eye = torch.eye(m, dtype=q.dtype, device=q.device)
        kernel_2 = torch.where(landmark[:, None, :, None], kernel_2, eye)  # unused slots: identity rows
        kernel_3 = masked_softmax(q_l @ k.transpose(-1, -2), mask[:, None, None, :])  # (B, h, m, L)
        middle = newton_schulz_pinv(kernel_2, self.pinv_iterations)  # (B, h, m, m)
        out = kernel_1 @ (middle @ (kernel_3 @ v))  # (B, h, L, d)
        first_row = kernel_1[:, :, :1] @ middle @ kernel_3  # (B, h, 1, L)
        return out, first_row
