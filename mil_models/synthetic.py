"""Synthetic planted-signal bags for tests and benchmarks of MIL heads (no real data needed)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PlantedBags:
    """Bags ``[N_i, D]``, bag labels ``[B]`` long (1 = holds witnesses) and per-bag witness flags ``[N_i]`` bool."""

    bags: list[torch.Tensor]
    labels: torch.Tensor
    witnesses: list[torch.Tensor]


def planted_signal_bags(
    n_bags: int,
    dim: int = 512,
    n_instances: tuple[int, int] = (20, 50),
    n_witnesses: tuple[int, int] = (3, 6),
    shift: float = 4.0,
    seed: int = 0,
) -> PlantedBags:
    """Bags of standard-normal instances; every second bag is positive and holds a few witness instances
    shifted by ``shift`` along one random unit direction (the same for all bags of a ``seed``).

    Args:
        n_bags: number of bags (half positive, alternating).
        dim: instance feature size ``D``.
        n_instances: inclusive range of the bag size ``N_i``.
        n_witnesses: inclusive range of the witness count of a positive bag (clipped to ``N_i``).
        shift: distance of the witness distribution's mean from the background's, in standard deviations.
        seed: seeds the direction and every draw.
    """
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(dim, generator=gen)
    direction /= direction.norm()
    bags, witnesses = [], []
    labels = torch.arange(n_bags) % 2
    for label in labels.tolist():
        n = int(torch.randint(n_instances[0], n_instances[1] + 1, (1,), generator=gen))
        bag = torch.randn(n, dim, generator=gen)
        flags = torch.zeros(n, dtype=torch.bool)
        if label:
            k = min(n, int(torch.randint(n_witnesses[0], n_witnesses[1] + 1, (1,), generator=gen)))
            flags[torch.randperm(n, generator=gen)[:k]] = True
            bag[flags] += shift * direction
        bags.append(bag)
        witnesses.append(flags)
    return PlantedBags(bags=bags, labels=labels, witnesses=witnesses)
