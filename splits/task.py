"""The prediction task (``task:`` section of params.yaml): which label column, which classes, ordered or not.

Shared by every stage that needs labels (split, train, probe, zeroshot).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from slidemil.core.errors import ParamsError
from slidemil.core.params import stage_params

TASK_DEFAULTS: dict[str, Any] = {
    "label": "label",  # cohort column holding the class name of each slide
    "classes": [],  # class names; their order is the class index. Empty → sorted unique labels
    "ordered": False,  # ordinal classes (e.g. grades): adds quadratic-weighted kappa
}


@dataclass(frozen=True)
class Task:
    """A slide classification task.

    Attributes:
        label: cohort column with the class name of each slide.
        classes: class names in class-index order; empty means "the sorted unique labels of the cohort"
            (see :meth:`resolve_classes`).
        ordered: whether the classes are ordinal.
    """

    label: str
    classes: tuple[str, ...]
    ordered: bool

    def resolve_classes(self, labels: Iterable[str]) -> tuple[str, ...]:
        """The class names in index order: ``classes`` if given, else the sorted unique non-empty ``labels``."""
        if self.classes:
            return self.classes
        return tuple(sorted({str(v) for v in labels if str(v) != ""}))


def load_task(params: dict[str, Any]) -> Task:
    """Read and validate the ``task:`` section (merged onto ``TASK_DEFAULTS``).

    Class names are compared as text (the cohort is read as text), so ``classes: [0, 1]`` matches
    labels ``"0"`` and ``"1"``.

    Raises:
        ParamsError: unknown key, empty label column name, blank or repeated class names.
    """
    section = stage_params(params, "task", TASK_DEFAULTS)
    label = str(section["label"]).strip()
    if not label:
        raise ParamsError("task.label is empty; name the cohort column that holds the class of each slide")
    classes = tuple(str(c).strip() for c in section["classes"])
    if any(c == "" for c in classes):
        raise ParamsError(f"task.classes has a blank name: {list(classes)}")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise ParamsError(f"task.classes repeats {repeated}; each class must be listed once")
    return Task(label=label, classes=classes, ordered=bool(section["ordered"]))
