"""CONCH v1 (``conch_ViT-B-16``) image–text model: the two encoders and the logit scale (docs/conch.md §1, §3).

Lu et al., "A visual-language foundation model for computational pathology", Nature Medicine 2024.
The multimodal decoder is not built: its weights are not in the public checkpoint.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from slidemil.extract.conch.text import ConchText
from slidemil.extract.conch.vision import ConchVisual


class ConchModel(nn.Module):
    """CONCH v1 encoders. State-dict keys are exactly the checkpoint's (``logit_scale``, ``text.*``, ``visual.*``).

    ``encode_image(image [B, 3, H, W]) -> [B, 512]`` and ``encode_text(ids [B, 128]) -> [B, 512]`` follow the
    original's semantics; cosine logits are scaled by ``exp(logit_scale)``. No dropout or batch norm:
    train and eval mode give the same outputs.
    """

    def __init__(self, with_caption_pooler: bool = True) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.text = ConchText()
        self.visual = ConchVisual(with_caption_pooler=with_caption_pooler)

    def encode_image(
        self, image: torch.Tensor, proj_contrast: bool = True, normalize: bool = True
    ) -> torch.Tensor:
        """Image embedding [B, 512] of preprocessed images [B, 3, H, W] (448 px; other sizes resample pos_embed).

        ``proj_contrast=False, normalize=False`` is the pre-projection embedding kept in the feature
        store (the README's choice for probes and MIL); both True (default) is the zero-shot/retrieval
        embedding, equal to ``normalize(pre @ visual.proj_contrast)``.
        """
        features = self.visual(image)  # (B, 512)
        if proj_contrast:
            features = self.visual.forward_project(features)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, ids: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Text embedding [B, 512] of token ids [B, 128] int64 from ``extract.conch.tokenize``."""
        features = self.text(ids)
        return F.normalize(features, dim=-1) if normalize else features
