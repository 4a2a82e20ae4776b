"""Training objectives of MIL heads for survival and regression: losses on a head's raw outputs ``[B, K]``
and the one conversion of raw outputs into the kind's prediction (:meth:`Objective.predict`).

Classification stays the trainer's own cross-entropy path. An objective is fitted on a fold's training
targets (bin edges, standardisation), so nothing of the validation or test slides leaks into it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

REGRESSION_LOSSES = ("mse", "huber")


class Objective(Protocol):
    """What :func:`slidemil.pipeline.trainer.train_fold` needs from a non-classification task.

    Attributes:
        n_outputs: columns ``K`` of the head's raw output; monitor: validation metric for early stopping.
    """

    n_outputs: int
    monitor: str

    def target_tensor(self, targets: Sequence[Any]) -> torch.Tensor:
        """Targets of a batch as a tensor (survival ``[B, 2]`` time, event; regression ``[B]``)."""

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Scalar loss of raw outputs ``[B, K]`` against ``target_tensor`` output."""

    def predict(self, raw: np.ndarray) -> np.ndarray:
        """The kind's prediction from raw outputs ``[n, K]`` (survival ``[n, 1 + bins]``: risk, then S(t) per
        bin where the loss defines it; regression ``[n]`` in the user's units)."""

    def val_metrics(self, targets: np.ndarray, raw: np.ndarray) -> dict[str, float]:
        """``loss`` and the kind's metrics on validation targets and raw outputs (keys without ``val/``)."""


class DiscreteTimeNLL:
    """Discrete-time survival NLL (Zadeh & Schmid, IEEE TPAMI 2021, "Bias in cross-entropy-based training of deep
    survival networks"): the head outputs one hazard logit per time bin, bins cut at quantiles of the training
    fold's event times. Risk = − expected survival time over the bins (− Σ_k S(t_k)).

    Args:
        train_targets: ``[n, 2]`` (time, event) of the training fold; n_bins: time bins ``K``.
    """

    monitor = "val/c_index"

    def __init__(self, train_targets: np.ndarray, n_bins: int = 4) -> None:
        time, event = np.asarray(train_targets, float).T
        events = time[event == 1] if (event == 1).any() else time
        self.cuts = np.unique(np.quantile(events, np.arange(1, n_bins) / n_bins))  # inner edges
        self.n_outputs = len(self.cuts) + 1

    def target_tensor(self, targets: Sequence[Any]) -> torch.Tensor:
        return torch.as_tensor(np.asarray(targets, float), dtype=torch.float32).reshape(-1, 2)

    def bins(self, time: torch.Tensor) -> torch.Tensor:
        """Bin index ``[B]`` of follow-up times ``[B]`` (an event at an edge falls in the bin it closes)."""
        return torch.bucketize(time.contiguous(), torch.as_tensor(self.cuts, dtype=time.dtype, device=time.device))

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = y.to(raw.device)
        k, event = self.bins(y[:, 0]), y[:, 1]
        log_s = torch.cumsum(nn.functional.logsigmoid(-raw), dim=1)  # log S(t_k) [B, K]
        log_s_prev = torch.cat([torch.zeros_like(log_s[:, :1]), log_s[:, :-1]], dim=1)
        rows = torch.arange(len(k), device=raw.device)
        log_h = nn.functional.logsigmoid(raw)[rows, k]
        uncensored = -(log_s_prev[rows, k] + log_h)
        censored = -log_s[rows, k]
        return (event * uncensored + (1 - event) * censored).mean()

    def predict(self, raw: np.ndarray) -> np.ndarray:
        survival = np.cumprod(1.0 / (1.0 + np.exp(np.asarray(raw, float))), axis=1)  # S = Π (1 − σ(l))
        return np.column_stack([-survival.sum(axis=1), survival])

    def val_metrics(self, targets: np.ndarray, raw: np.ndarray) -> dict[str, float]:
        return _survival_val(self, targets, raw)


class CoxLoss:
    """Negative Cox partial log-likelihood of the batch (Breslow ties), one output = the linear predictor,
    which is the risk. Cox, J. R. Stat. Soc. B 1972; as a network loss: Katzman et al. (DeepSurv) 2018."""

    monitor = "val/c_index"
    n_outputs = 1

    def __init__(self, train_targets: np.ndarray | None = None) -> None:
        del train_targets  # nothing to fit

    def target_tensor(self, targets: Sequence[Any]) -> torch.Tensor:
        return torch.as_tensor(np.asarray(targets, float), dtype=torch.float32).reshape(-1, 2)

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = y.to(raw.device)
        order = torch.argsort(y[:, 0], descending=True)
        risk, event = raw[order, 0], y[order, 1]
        log_risk_set = torch.logcumsumexp(risk, dim=0)  # log Σ_{j: t_j ≥ t_i} exp(r_j)
        n_events = event.sum()
        if n_events == 0:
            return (risk * 0.0).sum()  # no event in the batch: no information, keep the graph
        return -((risk - log_risk_set) * event).sum() / n_events

    def predict(self, raw: np.ndarray) -> np.ndarray:
        return np.asarray(raw, float)[:, :1]

    def val_metrics(self, targets: np.ndarray, raw: np.ndarray) -> dict[str, float]:
        return _survival_val(self, targets, raw)


class StandardisedRegression:
    """One output; MSE or Huber loss on the target standardised with the training fold's mean and SD;
    predictions are mapped back to the user's units."""

    monitor = "val/loss"
    n_outputs = 1

    def __init__(self, train_targets: np.ndarray, loss: str = "mse") -> None:
        y = np.asarray(train_targets, float)
        if loss not in REGRESSION_LOSSES:
            raise ValueError(f"regression loss must be one of {REGRESSION_LOSSES}, got {loss!r}")
        self.mean, self.std = float(y.mean()), float(y.std()) or 1.0
        self.loss_name = loss

    def target_tensor(self, targets: Sequence[Any]) -> torch.Tensor:
        return torch.as_tensor((np.asarray(targets, float) - self.mean) / self.std, dtype=torch.float32)

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fn = nn.functional.mse_loss if self.loss_name == "mse" else nn.functional.huber_loss
        return fn(raw[:, 0], y.to(raw.device))

    def predict(self, raw: np.ndarray) -> np.ndarray:
        return np.asarray(raw, float)[:, 0] * self.std + self.mean

    def val_metrics(self, targets: np.ndarray, raw: np.ndarray) -> dict[str, float]:
        from slidemil.pipeline.kinds.regression_metrics import regression_metrics

        loss = float(self.loss(torch.as_tensor(raw, dtype=torch.float32), self.target_tensor(targets)))
        return {"loss": loss, **regression_metrics(targets, self.predict(raw))}


def _survival_val(objective, targets: np.ndarray, raw: np.ndarray) -> dict[str, float]:
    from slidemil.pipeline.kinds.survival_metrics import survival_metrics

    targets = np.asarray(targets, float)
    loss = float(objective.loss(torch.as_tensor(raw, dtype=torch.float32), objective.target_tensor(targets)))
    scores = survival_metrics(targets[:, 0], targets[:, 1], objective.predict(raw)[:, 0])
    return {"loss": loss, "c_index": scores["c_index"]}
