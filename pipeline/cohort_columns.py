"""The cohort columns the params need, checked by the CLI before any stage works.

A typo in ``task.label`` then stops ``tile`` at once instead of ``split`` after hours of extraction.
(Called only from the CLI, so a stage's dvc.yaml params need not list ``task``/``split`` for it.)
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slidemil.core.errors import CohortError


def check_cohort_columns(params: Mapping[str, Any]) -> None:
    """Check that the cohort table has the task's columns (``task.label``; ``task.time`` and ``task.event`` for
    a survival task) and ``split.site_column`` when set.

    Reads only the header. A missing cohort file is left to the stage (which names it).

    Raises:
        CohortError: naming the missing column, the file and the columns it has.
    """
    cohort = params.get("cohort")
    if not cohort or not Path(cohort).is_file():
        return
    with open(cohort, newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), [])
    task = params.get("task") or {}
    if task.get("type") == "survival":
        needed = {"task.time": task.get("time", ""), "task.event": task.get("event", "")}
    else:
        needed = {"task.label": task.get("label", "label")}
    needed["split.site_column"] = (params.get("split") or {}).get("site_column", "")
    for key, column in needed.items():
        if column and column not in header:
            raise CohortError(f"{cohort} has no column {column!r} ({key}); its columns are {', '.join(header)}. "
                              f"Fix {key} in params.yaml or the cohort table")
