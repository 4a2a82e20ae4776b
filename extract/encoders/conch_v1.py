"""Registry entry ``conch_v1``: CONCH ViT-B/16 at 448 px, stored embedding = pre-projection 512-d."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from slidemil.extract.encoders.base import Encoder, resolve_precision
from slidemil.extract.encoders.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, Preprocessing
from slidemil.extract.encoders.registry import ENCODERS

log = logging.getLogger(__name__)

CONCH_PREPROCESSING = Preprocessing(
    size=448, interpolation="bicubic", mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD
)


def conch_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Stored CONCH embedding [B, 512]: ``encode_image(x, proj_contrast=False, normalize=False)``."""
    return model.encode_image(x, proj_contrast=False, normalize=False)


@ENCODERS.register("conch_v1")
def conch_v1(checkpoint: str | Path | None, device: torch.device, precision: str) -> Encoder:
    """CONCH v1 (Lu et al., Nature Medicine 2024) from a local file, ``hf_hub:``, ``synthetic[:seed]`` or env."""
    from slidemil.extract.conch.checkpoint import load_conch_model

    model, sha, report = load_conch_model(checkpoint)
    if report.dropped:
        log.info(
            "CONCH checkpoint: dropped %d unused key(s): %s", len(report.dropped), ", ".join(report.dropped)
        )
    if report.missing_optional:
        log.warning(
            "CONCH checkpoint has no caption pooler (%s); the image and text encoders are unaffected",
            ", ".join(report.missing_optional),
        )
    if report.cast_from:
        log.info("CONCH checkpoint: cast %s weights to float32", ", ".join(report.cast_from))
    return Encoder(
        id="conch_v1",
        model=model,
        embed_dim=512,
        preprocessing=CONCH_PREPROCESSING,
        weights_sha256=sha,
        device=device,
        precision=resolve_precision(precision, device),
        embedding="pre-projection, unnormalised, 512-d",
        features=conch_features,
        load_report=asdict(report),
    )
