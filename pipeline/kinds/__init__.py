"""Task kinds besides classification (registered into :data:`slidemil.pipeline.task_kinds.TASK_KINDS`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slidemil.pipeline.kinds import regression, survival  # noqa: F401  (registers the kinds)


def kind_for(params: Mapping[str, Any], task: Any, data: Any):
    """The task kind of ``task`` built for ``data``; a survival kind takes ``report.horizons`` (times for the
    time-dependent AUC, the user's unit; empty → quartiles of the cohort's event times).

    Raises:
        ParamsError: ``report.horizons`` is not a list of positive numbers.
    """
    from slidemil.core.errors import ParamsError
    from slidemil.pipeline.task_kinds import create_task_kind

    kind = create_task_kind(task, data)
    horizons = (params.get("report") or {}).get("horizons") or []
    if kind.name == "survival" and horizons:
        if not isinstance(horizons, list) or not all(isinstance(h, int | float) and h > 0 for h in horizons):
            raise ParamsError(f"report.horizons must be a list of positive times, got {horizons!r}")
        kind.horizons = tuple(float(h) for h in horizons)
    return kind
