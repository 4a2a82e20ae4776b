"""MIL heads as pure ``nn.Module``s behind one registry and one interface.

``create_mil_model(name, in_dim, n_classes, **kwargs)``; every head's
``forward(x [B, N, D], mask [B, N] bool, label [B] long | None = None)`` returns
``{"logits": [B, C], "attention": [B, N] or [B, C, N], "aux_loss": scalar tensor or None}``.
"""

from slidemil.mil_models import abmil, clam, dsmil, pooling, transmil  # noqa: F401  (modules register their heads)
from slidemil.mil_models._registry import create_mil_model, list_mil_models
from slidemil.mil_models.batching import pad_bags

__all__ = ["create_mil_model", "list_mil_models", "pad_bags"]
