"""The encoder registry and factory: ``create_encoder(name, checkpoint, device, precision)``."""

from __future__ import annotations

from pathlib import Path

import torch

from slidemil.core.errors import UnknownPluginError
from slidemil.core.registry import Registry
from slidemil.extract.encoders.base import Encoder, resolve_device

ENCODERS: Registry = Registry("encoder")
TIMM_PREFIX = "timm:"


def create_encoder(
    name: str,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> Encoder:
    """Build a registered encoder (``list_encoders()``), or any timm model as ``"timm:<model_name>"``.

    ``checkpoint``: local file; for ``conch_v1`` also ``hf_hub:MahmoodLab/conch``, ``synthetic[:seed]`` or
    None (env ``CONCH_CHECKPOINT``); for the timm-based entries ``random[:seed]`` gives random weights
    (tests only). ``precision``: ``auto`` | ``fp32`` | ``bf16`` | ``fp16`` (autocast). Nothing is downloaded
    except an explicit ``hf_hub:`` checkpoint. Raises UnknownPluginError (unknown name; a KeyError), ParamsError (device,
    precision), CheckpointError (missing/mismatched weights).
    """
    dev = resolve_device(device)
    if name.startswith(TIMM_PREFIX):
        return ENCODERS.get("timm")(checkpoint, dev, precision, model_name=name.removeprefix(TIMM_PREFIX))
    if name == "timm":
        raise UnknownPluginError("encoder 'timm' needs a model name: 'timm:<model_name>', e.g. 'timm:resnet18'")
    return ENCODERS.get(name)(checkpoint, dev, precision)


def list_encoders() -> list[str]:
    """Registered encoder names; ``timm`` stands for ``timm:<model_name>``."""
    return ENCODERS.names()
