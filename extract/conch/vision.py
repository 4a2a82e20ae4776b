"""CONCH v1 vision tower: timm ViT-B/16 trunk at 448 px plus CoCa-style attentional poolers (docs/conch.md §1, §3.1–3.2).

Lu et al., "A visual-language foundation model for computational pathology", Nature Medicine 2024;
attentional pooling from Yu et al., "CoCa: Contrastive Captioners are Image-Text Foundation Models", 2022.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

IMAGE_SIZE = 448
TRUNK_WIDTH = 768
EMBED_DIM = 512  # contrastive space and pre-projection embedding
CAPTION_QUERIES = 256
POOLER_HEADS = 8


class AttentionalPooler(nn.Module):
    """Cross-attention of learned queries over all tokens; no residual, no MLP.

    ``forward(x [B, N, context_dim]) -> [B, n_queries, d_model]``: keys = values = ``ln_k(x)`` (CLS included),
    queries = ``ln_q(query)`` shared across the batch, then ``nn.MultiheadAttention`` (LayerNorm eps 1e-5).
    """

    def __init__(self, d_model: int, context_dim: int, n_queries: int, n_heads: int = POOLER_HEADS) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        # kdim != d_model gives separate q/k/v projection weights, as in the checkpoint (docs/conch.md §2).
        self.attn = nn.MultiheadAttention(
            d_model, n_heads, kdim=context_dim, vdim=context_dim, batch_first=True
        )
        self.ln_q = nn.LayerNorm(d_model)
        self.ln_k = nn.LayerNorm(context_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kv = self.ln_k(x)  # (B, N, C)
        q = self.ln_q(self.query).unsqueeze(0).expand(x.shape[0], -1, -1)  # (B, Q, D)
        return self.attn(q, kv, kv, need_weights=False)[0]  # (B, Q, D)


def build_trunk() -> VisionTransformer:
    """timm ``VisionTransformer`` exactly as CONCH builds it: ViT-B/16, 448 px, no head, dynamic image size.

    With ``dynamic_img_size`` another input size resamples the 28×28 position grid at run time
    (bicubic, antialiased; CLS row kept). LayerNorm eps 1e-6, exact GELU, no LayerScale.
    """
    return VisionTransformer(
        img_size=IMAGE_SIZE,
        patch_size=16,
        embed_dim=TRUNK_WIDTH,
        depth=12,
        num_heads=12,
        mlp_ratio=4,
        num_classes=0,
        dynamic_img_size=True,
    )


class ConchVisual(nn.Module):
    """Vision tower. ``forward(x [B, 3, H, W]) -> [B, 512]``: the pre-projection embedding
    ``ln_contrast(attn_pool_contrast(trunk.forward_features(x))[:, 0])``, unnormalised.

    ``with_caption_pooler=False`` leaves out the 256-query caption pooler, which only feeds the (absent)
    text decoder; ``caption_tokens(x) -> [B, 256, 768]`` needs it.
    """

    def __init__(self, with_caption_pooler: bool = True) -> None:
        super().__init__()
        self.proj_contrast = nn.Parameter(torch.empty(EMBED_DIM, EMBED_DIM))  # used as x @ W
        self.trunk = build_trunk()
        self.attn_pool_contrast = AttentionalPooler(EMBED_DIM, TRUNK_WIDTH, n_queries=1)
        self.ln_contrast = nn.LayerNorm(EMBED_DIM)
        self.attn_pool_caption: AttentionalPooler | None = None
        self.ln_caption: nn.LayerNorm | None = None
        if with_caption_pooler:
            self.attn_pool_caption = AttentionalPooler(TRUNK_WIDTH, TRUNK_WIDTH, n_queries=CAPTION_QUERIES)
            self.ln_caption = nn.LayerNorm(TRUNK_WIDTH)
        nn.init.normal_(self.proj_contrast, std=EMBED_DIM**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.trunk.forward_features(x)  # (B, 1 + H/16·W/16, 768), final norm applied
        return self.ln_contrast(self.attn_pool_contrast(tokens)[:, 0])  # (B, 512)

    def forward_project(self, features: torch.Tensor) -> torch.Tensor:
        """Stored pre-projection features [N, 512] → contrastive space [N, 512] (``f @ proj_contrast``)."""
        return features @ self.proj_contrast

    def caption_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Caption-pooler output [B, 256, 768] (decoder input; unused by the encoders)."""
        if self.attn_pool_caption is None or self.ln_caption is None:
            raise RuntimeError(
                "this CONCH model was loaded without the caption pooler (not in the checkpoint)"
            )
        return self.ln_caption(self.attn_pool_caption(self.trunk.forward_features(x)))
