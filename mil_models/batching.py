"""Collating bags of different sizes into one padded, masked batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.utils.rnn import pad_sequence


def pad_bags(bags: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack bags ``[N_i, D]`` into ``x [B, N_max, D]`` (zero-padded) and ``mask [B, N_max]`` (True = real).

    Raises:
        ValueError: no bag, a bag that is not ``[N_i, D]``, an empty bag (``N_i == 0``: drop that slide), or
            bags of different feature sizes ``D``.
    """
    if not bags:
        raise ValueError("pad_bags needs at least one bag")
    dims = {tuple(bag.shape[1:]) for bag in bags}
    if len(dims) != 1 or any(bag.dim() != 2 for bag in bags):
        raise ValueError(f"bags must all be [N_i, D] with one D, got shapes {[tuple(b.shape) for b in bags]}")
    lengths = torch.tensor([bag.shape[0] for bag in bags], device=bags[0].device)
    empty = (lengths == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"empty bag(s) at index {empty}: a slide without patches cannot be classified, drop it"
        )
    if len(bags) == 1:  # one bag needs no padding: a view, not a copy
        x = bags[0].unsqueeze(0)  # (1, N, D)
    else:
        x = pad_sequence(list(bags), batch_first=True)  # (B, N_max, D)
    mask = torch.arange(x.shape[1], device=x.device) < lengths.unsqueeze(1)  # (B, N_max)
    return x, mask
