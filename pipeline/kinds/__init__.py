"""Task kinds besides classification (registered into :data:`slidemil.pipeline.task_kinds.TASK_KINDS`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slidemil.pipeline.kinds import regression, survival  # noqa: F401  (registers the kinds)


def kind_for(params: Mapping[str, Any], task: Any, data: Any):
    """The task kind of ``task`` built for ``data``; a survival kind takes ``task.horizons`` (times for the
    time-dependent AUC, the user's unit; empty → quartiles of the cohort's event times).

    Raises:
        ParamsError: the ``task:`` section is malformed (e.g. a horizon ≤ 0).
    """
    from slidemil.core.params import read_section
    from slidemil.pipeline.task_kinds import create_task_kind
    from slidemil.splits.task import TaskSection

    kind = create_task_kind(task, data)
    horizons = read_section(dict(params), "task", TaskSection).horizons
    if kind.name == "survival" and horizons:
        kind.horizons = tuple(float(h) for h in horizons)
    return kind
