"""The MIL-head registry: ``create_mil_model(name, in_dim, n_classes, **kwargs)`` and ``list_mil_models()``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from slidemil.core.errors import ParamsError
from slidemil.core.registry import Registry

MIL_MODELS: Registry[Callable[..., nn.Module]] = Registry("MIL head")


def list_mil_models() -> list[str]:
    """Names of the registered MIL heads, sorted."""
    return MIL_MODELS.names()


def create_mil_model(name: str, in_dim: int, n_classes: int, **kwargs: Any) -> nn.Module:
    """Build the MIL head ``name`` for ``in_dim``-d instance features and ``n_classes`` outputs (classes; a survival
    head's time bins, or 1 for a Cox or regression head).

    Keyword arguments set to ``None`` are dropped so the head's defaults apply (common ones: ``hidden_dim``,
    ``dropout``). Every head's ``forward(x [B, N, D], mask [B, N] bool, label [B] long | None = None)``
    returns ``{"logits": [B, C], "attention": [B, N] or [B, C, N], "aux_loss": scalar tensor or None}``.

    Raises:
        UnknownPluginError (a KeyError): unknown head name (the message lists the registered ones).
        ValueError: ``in_dim < 1`` or ``n_classes < 1``.
        ParamsError: an option the head does not take (the message lists the ones it takes).
    """
    factory = MIL_MODELS.get(name)
    if in_dim < 1 or n_classes < 1:
        raise ValueError(
            f"MIL head {name!r} needs in_dim >= 1 and n_classes >= 1, got {in_dim} and {n_classes}"
        )
    kwargs = {key: value for key, value in kwargs.items() if value is not None}
    accepted = [p for p in inspect.signature(factory).parameters if p not in ("in_dim", "n_classes")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ParamsError(
            f"MIL head {name!r} does not take option(s) {unknown}; it takes {accepted}. Fix the head options in params.yaml"
        )
    return factory(in_dim=in_dim, n_classes=n_classes, **kwargs)
