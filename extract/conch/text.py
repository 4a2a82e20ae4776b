"""CONCH v1 text tower (docs/conch.md §1, §3.4): 12-layer causal transformer with a learned CLS appended at the end.

Lu et al., Nature Medicine 2024; CoCa-style unimodal text encoder (Yu et al. 2022) as laid out by open_clip.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

CONTEXT_LENGTH = 128
VOCAB_SIZE = 32007
WIDTH = 768
HEADS = 12
LAYERS = 12
PAD_ID = 0


class ResidualAttentionBlock(nn.Module):
    """Pre-norm block: ``x += MHA(ln_1(x), mask)``, ``x += c_proj(GELU(c_fc(ln_2(x))))``; x [B, L, 768]."""

    def __init__(self, width: int = WIDTH, heads: int = HEADS) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, width * 4)),
                    ("gelu", nn.GELU()),
                    ("c_proj", nn.Linear(width * 4, width)),
                ]
            )
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=attn_mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """Stack of ``layers`` residual attention blocks under ``resblocks`` (checkpoint key layout)."""

    def __init__(self, width: int = WIDTH, layers: int = LAYERS, heads: int = HEADS) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


def text_attention_mask(tokens: torch.Tensor, heads: int, pad_id: int = PAD_ID) -> torch.Tensor:
    """Additive mask [B·heads, L+1, L+1] (0 / −inf, batch-major then head) for tokens [B, L] plus CLS.

    Causal everywhere; in the CLS row (last) key column c is allowed iff c == 0 or ``tokens[:, c-1] != pad``.
    This one-position shift is the original's behaviour (CLS sees the first pad after EOS) and is kept
    on purpose: a "fixed" mask changes the embeddings.
    """
    batch, length = tokens.shape
    seq = length + 1
    causal = torch.full((seq, seq), float("-inf"), device=tokens.device).triu_(1)  # (S, S)
    allowed = torch.cat([torch.ones_like(tokens[:, :1], dtype=torch.bool), tokens != pad_id], dim=1)  # (B, S)
    mask = causal.expand(batch, seq, seq).clone()  # (B, S, S)
    mask[:, -1, :] = torch.where(allowed, 0.0, float("-inf"))  # CLS row: causal allows all, pads blocked
    return mask.repeat_interleave(heads, dim=0)  # (B·heads, S, S)


class ConchText(nn.Module):
    """Text tower. ``forward(ids [B, L+1] int64) -> [B, 512]`` unnormalised; L+1 = 128 from the tokenizer.

    The last id column is a placeholder and dropped; the CLS vector is appended at position L, the
    128-row positional embedding added, and ``ln_final(x[:, -1]) @ text_projection`` returned.
    """

    def __init__(self) -> None:
        super().__init__()
        self.text_projection = nn.Parameter(torch.empty(WIDTH, 512))
        self.cls_emb = nn.Parameter(torch.empty(WIDTH))
        self.positional_embedding = nn.Parameter(torch.empty(CONTEXT_LENGTH, WIDTH))
        self.token_embedding = nn.Embedding(VOCAB_SIZE, WIDTH)
        self.transformer = Transformer()
        self.ln_final = nn.LayerNorm(WIDTH)
        for p in (self.text_projection, self.cls_emb, self.positional_embedding):
            nn.init.normal_(p, std=0.01)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        tokens = ids[:, :-1]  # (B, L)
        if tokens.shape[1] + 1 > CONTEXT_LENGTH:
            raise ValueError(
                f"token ids [B, {ids.shape[1]}] are longer than CONCH's context ({CONTEXT_LENGTH})"
            )
        x = self.token_embedding(tokens)  # (B, L, 768)
        x = torch.cat([x, self.cls_emb.to(x.dtype).expand(x.shape[0], 1, -1)], dim=1)  # (B, L+1, 768)
        x = x + self.positional_embedding[: x.shape[1]]
        x = self.transformer(x, text_attention_mask(tokens, HEADS).to(x.dtype))
        return self.ln_final(x[:, -1]) @ self.text_projection  # (B, 512)
