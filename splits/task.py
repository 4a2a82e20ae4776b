"""The prediction task (``task:`` section of params.yaml): its type (classification | survival | regression),
the cohort columns it reads (the user's own names), classes, and the level (slide or patient).

Shared by every stage that needs labels (split, train, probe, zeroshot).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PositiveFloat, StrictBool, model_validator

from slidemil.core.errors import ParamsError
from slidemil.core.params import Section, read_section


def _as_text(value: Any) -> Any:
    """Class names are compared as text (the cohort is read as text): ``1`` → ``"1"``, blanks stripped."""
    return str(value).strip() if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value


class TaskSection(Section):
    """The ``task:`` params section."""

    type: Literal["classification", "survival", "regression"] = Field(
        "classification", description="task kind scoring the predictions (slidemil.pipeline.task_kinds)")
    label: str = Field("label", description="cohort column holding the class name (classification) or the "
                       "numeric target (regression) of each slide; unused by survival")
    classes: list[Annotated[str, BeforeValidator(_as_text)]] = Field(
        default_factory=list, description="class names; their order is the class index. Empty: sorted unique labels")
    ordered: StrictBool = Field(False, description="ordinal classes (e.g. grades): adds quadratic-weighted kappa")
    time: str = Field("", description="survival: follow-up time column (> 0, any unit)")
    event: str = Field("", description="survival: event column (1/0, true/false, yes/no, dead/alive, "
                       "event/censored)")
    level: Literal["slide", "patient"] = Field("slide", description="slide | patient (all slides of a patient "
                                               "form one bag; metrics per patient)")
    # part of the task (what is scored), not of the report: train, probe and report all score with them, and
    # DVC re-runs them when they change (every stage lists the task section)
    horizons: list[PositiveFloat] = Field(
        default_factory=list, description="survival: times (the cohort's unit) of the time-dependent AUC; "
        "empty: the quartiles of the cohort's event times")

    @model_validator(mode="after")
    def _names(self) -> TaskSection:
        if self.type == "survival" and not (self.time.strip() and self.event.strip()):
            raise ParamsError("task.type survival needs task.time (follow-up time column) and task.event "
                              "(event column) naming cohort columns")
        if self.type != "survival" and not self.label.strip():
            raise ParamsError("task.label is empty; name the cohort column that holds the class of each slide")
        if any(c == "" for c in self.classes):
            raise ParamsError(f"task.classes has a blank name: {self.classes}")
        repeated = sorted({c for c in self.classes if self.classes.count(c) > 1})
        if repeated:
            raise ParamsError(f"task.classes repeats {repeated}; each class must be listed once")
        return self


@dataclass(frozen=True)
class Task:
    """A prediction task.

    Attributes:
        label: cohort column with the class name (classification) or numeric target (regression) of each
            slide; for survival the time column (it names the MLflow experiment and the splits' label).
        classes: class names in class-index order; empty means "the sorted unique labels of the cohort"
            (see :meth:`resolve_classes`).
        ordered: whether the classes are ordinal.
        type: ``classification`` | ``survival`` | ``regression`` (the task kind's registry name).
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

    def resolve_classes(self, labels: Iterable[str]) -> tuple[str, ...]:
        """The class names in index order: ``classes`` if given, else the sorted unique non-empty ``labels``."""
        if self.classes:
            return self.classes
        return tuple(sorted({str(v) for v in labels if str(v) != ""}))


def load_task(params: dict[str, Any]) -> Task:
    """Read and validate the ``task:`` section (:class:`TaskSection`).

    Class names are compared as text (the cohort is read as text), so ``classes: [0, 1]`` matches
    labels ``"0"`` and ``"1"``.

    Raises:
        ParamsError: unknown key, empty label column name, blank or repeated class names, unknown type or
            level, a survival task without time/event columns.
    """
    section = read_section(params, "task", TaskSection)
    time, event = section.time.strip(), section.event.strip()
    label = time if section.type == "survival" else section.label.strip()
    return Task(label=label, classes=tuple(section.classes), ordered=section.ordered, type=section.type, time=time,
                event=event, level=section.level)
