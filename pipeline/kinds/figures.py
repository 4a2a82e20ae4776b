"""Figures of the survival and regression kinds (pure: arrays in, a matplotlib ``Figure`` out)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from slidemil.pipeline.kinds.survival_metrics import logrank_p  # noqa: E402


def km_figure(time: np.ndarray, event: np.ndarray, groups: np.ndarray, title: str = "") -> Figure:
    """Kaplan–Meier curves (lifelines) of the ``high``/``low`` risk groups with numbers at risk and the log-rank p.

    Args:
        time, event: ``[n]`` follow-up (the user's unit) and event (1) / censored (0); groups: ``[n]`` group names.
    """
    from lifelines import KaplanMeierFitter

    time, event, groups = np.asarray(time, float), np.asarray(event, float), np.asarray(groups)
    fig, ax = plt.subplots(figsize=(6, 5))
    for group, colour in (("high", "tab:red"), ("low", "tab:blue")):
        members = groups == group
        if members.any():
            fitter = KaplanMeierFitter(label=f"{group} risk (n={int(members.sum())})")
            fitter.fit(time[members], event[members]).plot_survival_function(ax=ax, color=colour, ci_show=True)
    _at_risk_rows(ax, time, groups)
    p = logrank_p(time, event, groups)
    ax.set_xlabel("follow-up time")
    ax.set_ylabel("survival probability")
    ax.set_title(f"{title}\nlog-rank p = {p:.3g}" if np.isfinite(p) else f"{title}\nlog-rank p undefined (one group)")
    fig.subplots_adjust(bottom=0.3)
    return fig


def scatter_figure(target: np.ndarray, prediction: np.ndarray, title: str = "") -> Figure:
    """Predicted against true values with the identity line; Pearson r in the title."""
    from slidemil.pipeline.kinds.regression_metrics import regression_metrics

    y, p = np.asarray(target, float), np.asarray(prediction, float).reshape(-1)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y, p, s=14, alpha=0.7)
    if len(y):
        low, high = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
    r = regression_metrics(y, p)["pearson_r"] if len(y) else float("nan")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(f"{title}\nPearson r = {r:.3f}")
    fig.tight_layout()
    return fig


def _at_risk_rows(ax, time: np.ndarray, groups: np.ndarray) -> None:
    """Numbers at risk (follow-up ≥ tick) of each group under the x ticks.

    Own code: lifelines' ``add_at_risk_counts`` fails with pandas 3 (lifelines 0.30.0), and the count is one line.
    """
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    rows = [f"{g}: " + "  ".join(str(int((time[groups == g] >= t).sum())) for t in ticks)
            for g in ("high", "low") if (groups == g).any()]
    ticks_text = "  ".join(f"{t:g}" for t in ticks)
    ax.text(0.0, -0.16, f"at risk at t = {ticks_text}\n" + "\n".join(rows), transform=ax.transAxes,
            fontsize=7, va="top", family="monospace")
