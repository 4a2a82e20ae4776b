"""The ``Encoder`` object every registry entry returns: model + preprocessing + precision policy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from slidemil.core.errors import ParamsError
from slidemil.extract.encoders.preprocess import PilPreprocess, Preprocessing, prepare_batch

PRECISIONS = ("fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"`` / ``"cuda"`` / ``"cuda:1"`` → torch.device; ParamsError if CUDA is asked for but absent."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParamsError(f"device {device!r} requested but no CUDA device is available; use device='cpu'")
    return dev


def resolve_precision(precision: str, device: torch.device, allowed: tuple[str, ...] = PRECISIONS) -> str:
    """Precision policy: ``auto`` → bf16 on CUDA (fp16 where bf16 is unsupported), fp32 on CPU.

    bf16 autocast is allowed on CPU (slow without AMX; useful for checks); fp16 autocast only on CUDA.
    Raises ParamsError for an unknown value, one the entry does not allow, or fp16/bf16 unsupported here.
    """
    if precision == "auto":
        if device.type != "cuda":
            precision = "fp32"
        else:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        precision = precision if precision in allowed else "fp32"
    if precision not in PRECISIONS:
        raise ParamsError(f"precision {precision!r} is not one of auto, {', '.join(PRECISIONS)}")
    if precision not in allowed:
        raise ParamsError(
            f"precision {precision!r} is not allowed for this encoder; allowed: {', '.join(allowed)}"
        )
    if precision == "fp16" and device.type != "cuda":
        raise ParamsError("precision 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ParamsError("this GPU does not support bf16; use precision 'fp16' or 'fp32'")
    return precision


def model_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Default feature function: the model's own forward, [B, 3, S, S] → [B, D]."""
    return model(x)


@dataclass
class Encoder:
    """A patch encoder ready for inference: ``encoder(x [B, 3, S, S] float) -> [B, D] float32``.

    ``preprocess`` (PIL image → [3, S, S]) is the reference CPU path; ``prepare_batch`` does the same on the
    device from uint8 patches. ``features`` maps (model, x) to the stored embedding (for CONCH the
    pre-projection, unnormalised 512-d vector). Autocast applies when ``precision`` is bf16/fp16.
    """

    id: str
    model: nn.Module
    embed_dim: int
    preprocessing: Preprocessing
    weights_sha256: str
    device: torch.device
    precision: str
    embedding: str
    features: Callable[[nn.Module, torch.Tensor], torch.Tensor] = model_forward
    load_report: dict = field(default_factory=dict)
    stain_norm: Any = None  # extract.stain.StainNormalizer applied in prepare_batch, or None

    def __post_init__(self) -> None:
        self.model = self.model.to(self.device).eval().requires_grad_(False)
        self.preprocess = PilPreprocess(self.preprocessing)

    @property
    def input_size(self) -> int:
        return self.preprocessing.size

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.preprocessing.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.preprocessing.std

    @property
    def interpolation(self) -> str:
        return self.preprocessing.interpolation

    def prepare_batch(self, patches: torch.Tensor) -> torch.Tensor:
        """uint8 RGB patches [B, H, W, 3] (any device) → float32 [B, 3, S, S] on the encoder's device."""
        return prepare_batch(patches, self.preprocessing, self.device, self.stain_norm)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings [B, D] float32 of preprocessed patches [B, 3, S, S]; no grad, precision policy applied."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.id} expects preprocessed patches [B, 3, H, W], got {list(x.shape)}")
        x = x.to(self.device, non_blocking=True)
        enabled = self.precision != "fp32"
        dtype = AUTOCAST_DTYPES.get(self.precision, torch.bfloat16)
        with torch.no_grad(), torch.autocast(self.device.type, dtype=dtype, enabled=enabled):
            out = self.features(self.model, x)
        return out.float()

    def describe(self) -> dict:
        """Attributes for the feature store: id, dimension, weights hash, embedding, preprocessing, precision."""
        return {
            "encoder_id": self.id,
            "embed_dim": self.embed_dim,
            "weights_sha256": self.weights_sha256,
            "embedding": self.embedding,
            "preprocess": {**self.preprocessing.describe(),
                           **({"stain_norm": self.stain_norm.describe()} if self.stain_norm else {})},
            "precision": self.precision,
        }
