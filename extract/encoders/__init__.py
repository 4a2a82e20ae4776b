"""Patch encoders: one registry (``conch_v1`` first), each entry with its preprocessing and precision policy.

``create_encoder(name, checkpoint=None, device="cpu", precision="fp32") -> Encoder``; ``list_encoders()``.
"""

from slidemil.extract.encoders import conch_v1, timm_models  # noqa: F401  (register the entries)
from slidemil.extract.encoders.base import Encoder
from slidemil.extract.encoders.preprocess import Preprocessing
from slidemil.extract.encoders.registry import ENCODERS, create_encoder, list_encoders

__all__ = ["ENCODERS", "Encoder", "Preprocessing", "create_encoder", "list_encoders"]
