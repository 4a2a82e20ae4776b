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


@dataclass(frozen=True)
class PlantedOutcomes:
    """Bags ``[N_i, D]`` with the planted fraction ``[B]`` of each bag, and outcomes: follow-up ``time [B]`` (> 0),
    ``event [B]`` (1 event, 0 censored) and a continuous ``target [B]``."""

    bags: list[torch.Tensor]
    fraction: torch.Tensor
    time: torch.Tensor
    event: torch.Tensor
    target: torch.Tensor


def planted_outcome_bags(
    n_bags: int,
    dim: int = 64,
    n_instances: tuple[int, int] = (20, 50),
    shift: float = 4.0,
    log_hazard_ratio: float = 10.0,
    censored: float = 0.3,
    noise: float = 0.05,
    seed: int = 0,
) -> PlantedOutcomes:
    """Bags whose outcome depends on the fraction of a planted instance type (for survival and regression tests).

    Each bag draws a fraction ``f ~ U(0, 0.5)`` of its instances from the planted type (standard normal shifted
    by ``shift`` along one random unit direction). Survival: exponential event times with hazard
    ``0.1 · exp(log_hazard_ratio · f)`` (proportional hazards in ``f``); a random ``censored`` share of the bags is
    censored at a uniform time before its event. Regression: ``target = 10 f + noise · N(0, 1)``.

    Args:
        n_bags, dim, n_instances: bag count, feature size ``D``, inclusive range of ``N_i``; seed: every draw.
    """
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(dim, generator=gen)
    direction /= direction.norm()
    fraction = torch.rand(n_bags, generator=gen) * 0.5
    bags = []
    for f in fraction.tolist():
        n = int(torch.randint(n_instances[0], n_instances[1] + 1, (1,), generator=gen))
        bag = torch.randn(n, dim, generator=gen)
        k = round(f * n)
        bag[torch.randperm(n, generator=gen)[:k]] += shift * direction
        bags.append(bag)
    rate = 0.1 * torch.exp(log_hazard_ratio * fraction)
    time = -torch.log(torch.rand(n_bags, generator=gen).clamp_min(1e-6)) / rate
    event = torch.ones(n_bags, dtype=torch.long)
    cut = torch.randperm(n_bags, generator=gen)[: round(censored * n_bags)]
    event[cut] = 0
    time[cut] = time[cut] * torch.rand(len(cut), generator=gen).clamp_min(0.05)
    target = 10 * fraction + noise * torch.randn(n_bags, generator=gen)
    return PlantedOutcomes(bags=bags, fraction=fraction, time=time, event=event, target=target)
