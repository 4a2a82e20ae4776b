"""The prediction task (``task:`` section of params.yaml): its kind (classification | survival | regression),
the cohort columns it reads (the user's own names), classes, and the level (slide or patient).

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
    "type": "classification",  # classification | survival | regression
    "time": "",  # survival: follow-up time column (> 0, any unit)
    "event": "",  # survival: event column (1/0, true/false, yes/no, dead/alive, event/censored)
    "level": "slide",  # slide | patient (all slides of a patient form one bag; metrics per patient)
}

TASK_TYPES = ("classification", "survival", "regression")
LEVELS = ("slide", "patient")


@dataclass(frozen=True)
class Task:
    """A prediction task.

    Attributes:
        label: cohort column with the class name (classification) or numeric target (regression) of each
            slide; unused by survival.
        classes: class names in class-index order; empty means "the sorted unique labels of the cohort"
            (see :meth:`resolve_classes`).
        ordered: whether the classes are ordinal.
        type: ``classification`` | ``survival`` | ``regression``.
        time, event: survival's follow-up time column (> 0, any unit) and event column.
        level: ``slide`` or ``patient`` (every slide of a patient in one bag, metrics per patient).
    """

    label: str
    classes: tuple[str, ...]
    ordered: bool
    type: str = "classification"
    time: str = ""
    event: str = ""
    level: str = "slide"

    @property
    def kind(self) -> str:
        """The task kind's registry name (``type``)."""
        return self.type

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
        ParamsError: unknown key, empty label column name, blank or repeated class names, unknown type or
            level, a survival task without time/event columns.
    """
    section = stage_params(params, "task", TASK_DEFAULTS)
    label = str(section["label"]).strip()
    kind, level = str(section["type"]).strip(), str(section["level"]).strip()
    if kind not in TASK_TYPES:
        raise ParamsError(f"task.type {kind!r} unknown; choose one of {', '.join(TASK_TYPES)}")
    if level not in LEVELS:
        raise ParamsError(f"task.level {level!r} unknown; choose one of {', '.join(LEVELS)}")
    time, event = str(section["time"]).strip(), str(section["event"]).strip()
    if kind == "survival":
        if not time or not event:
            raise ParamsError("task.type survival needs task.time (follow-up time column) and task.event "
                              "(event column) naming cohort columns")
        label = time  # unused by survival; names the MLflow experiment and the splits' label
    if not label:
        raise ParamsError("task.label is empty; name the cohort column that holds the class of each slide")
    classes = tuple(str(c).strip() for c in section["classes"])
    if any(c == "" for c in classes):
        raise ParamsError(f"task.classes has a blank name: {list(classes)}")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise ParamsError(f"task.classes repeats {repeated}; each class must be listed once")
    return Task(label=label, classes=classes, ordered=bool(section["ordered"]), type=kind, time=time, event=event,
                level=level)
