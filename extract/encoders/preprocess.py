"""Patch preprocessing: shortest edge → S, centre crop S×S, scale to [0, 1], normalise per channel.

Two paths with the same geometry: ``PilPreprocess`` (the reference, torchvision on PIL images, as CONCH's
and CLAM's transforms) and ``prepare_batch`` (uint8 batches resized and normalised on the encoder's device,
so the CPU ships uint8 patches only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Resize (shortest edge → ``size``, long edge truncated), centre crop ``size``², normalise with mean/std."""

    size: int
    interpolation: str  # "bicubic" | "bilinear"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def describe(self) -> dict:
        """Plain dict for store attrs: size, interpolation, mean, std, resize rule."""
        return {
            **asdict(self),
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": "shortest edge, antialiased, then centre crop",
        }


class PilPreprocess:
    """Reference CPU path: PIL image (any mode) → float tensor [3, size, size].

    torchvision ``Resize(size)`` + ``CenterCrop(size)`` on the PIL image, then ``convert("RGB")``,
    ``ToTensor`` and ``Normalize`` — the order of CONCH's transform (docs/conch.md §4.1). Picklable for DataLoader workers.
    """

    def __init__(self, spec: Preprocessing) -> None:
        self.spec = spec

    def __call__(self, image: Image.Image) -> torch.Tensor:
        mode = InterpolationMode(self.spec.interpolation)
        image = TF.center_crop(TF.resize(image, self.spec.size, interpolation=mode), self.spec.size)
        tensor = TF.to_tensor(image.convert("RGB"))  # (3, S, S) in [0, 1]
        return TF.normalize(tensor, list(self.spec.mean), list(self.spec.std))


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) after shortest edge → ``size``; the long edge is ``int(size · long / short)`` (torchvision rule)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def prepare_batch(patches: torch.Tensor, spec: Preprocessing, device: torch.device | str,
                  stain: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """uint8 RGB patches [B, H, W, 3] (any device, or numpy) → float32 [B, 3, S, S] on ``device``.

    ``stain``: optional stain normaliser (``extract.stain``) applied to the uint8 patches on ``device`` first.

    Same geometry as ``PilPreprocess``: antialiased resize (PIL-style kernel), values rounded and clipped
    to 0..255 as PIL stores them, centre crop (round-half-even offsets), then normalisation.
    Raises ValueError for a batch that is not [B, H, W, 3] uint8.
    """
    x = torch.as_tensor(patches)
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
        raise ValueError(
            f"prepare_batch expects uint8 RGB patches [B, H, W, 3], got {x.dtype} {list(x.shape)}"
        )
    x = x.to(device, non_blocking=True)
    if stain is not None:
        x = stain(x)  # (B, H, W, 3) uint8
    x = x.permute(0, 3, 1, 2)  # (B, 3, H, W) uint8
    height, width = x.shape[-2:]
    size = spec.size
    if min(height, width) != size:
        shape = resized_shape(height, width, size)
        if x.device.type == "cpu" and spec.interpolation in ("bilinear", "bicubic"):
            # torch's uint8 antialiased resize (CPU only) computes as PIL does, in 8-bit passes: equal to
            # PIL for bilinear, within 2/255 for bicubic, and 2-3x cheaper than resizing float32.
            x = F.interpolate(x, size=shape, mode=spec.interpolation, antialias=True, align_corners=False).float()
        else:
            x = F.interpolate(x.float(), size=shape, mode=spec.interpolation, antialias=True, align_corners=False)
            x = x.round_().clamp_(0, 255)
        height, width = x.shape[-2:]
    x = x.float()  # (B, 3, H, W) 0..255
    top, left = int(round((height - size) / 2)), int(round((width - size) / 2))
    x = x[..., top : top + size, left : left + size]  # (B, 3, S, S)
    mean = torch.tensor(spec.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, 3, 1, 1)
    return (x / 255.0 - mean) / std
