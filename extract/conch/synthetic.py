"""Synthetic CONCH v1 checkpoints (docs/conch.md §6): deterministic random weights with the real key set.

Used by the tests to prove equality with the original code's outputs, and by the demo, since the real
weights are gated. ``synthetic_state_dict(1)`` is the checkpoint behind ``expected_seed1.npz``.
"""

from __future__ import annotations

import hashlib
import math

import torch

from slidemil.extract.conch.keys import key_table


def synthetic_state_dict(seed: int = 1) -> dict[str, torch.Tensor]:
    """All 326 keys of the table (caption pooler included), float32, ~802 MB.

    One ``torch.Generator`` seeded with ``seed`` draws standard-normal noise for each key in table
    order; ``normal`` → 0.02·noise, ``ln_weight`` → 1 + 0.1·noise, ``ln_bias`` → 0.1·noise,
    ``logit_scale`` → ln(1/0.07) + 0.1·noise.
    """
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for spec in key_table():
        noise = torch.randn(spec.shape, generator=g, dtype=torch.float32)
        if spec.init == "normal":
            value = noise.mul_(0.02)
        elif spec.init == "ln_weight":
            value = noise.mul_(0.1).add_(1.0)
        elif spec.init == "ln_bias":
            value = noise.mul_(0.1)
        elif spec.init == "logit_scale":
            value = noise.mul_(0.1).add_(math.log(1 / 0.07))
        else:
            raise ValueError(f"state_dict_keys.tsv: unknown init rule {spec.init!r} for {spec.key}")
        out[spec.key] = value
    return out


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over ``key.encode()`` then the tensor's raw bytes, for each key in dict order (docs/conch.md §6)."""
    h = hashlib.sha256()
    for key, value in state_dict.items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
