"""The prediction task (``task:`` section of params.yaml): which label column, which classes, ordered or not,
and which task kind scores the predictions.

Shared by every stage that needs labels (split, train, probe, zeroshot).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StrictBool, model_validator

from slidemil.core.errors import ParamsError
from slidemil.core.params import Section, read_section


def _as_text(value: Any) -> Any:
    """Class names are compared as text (the cohort is read as text): ``1`` → ``"1"``, blanks stripped."""
    return str(value).strip() if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value


class TaskSection(Section):
    """The ``task:`` params section."""

    label: str = Field("label", description="cohort column holding the class name of each slide")
    classes: list[Annotated[str, BeforeValidator(_as_text)]] = Field(
        default_factory=list, description="class names; their order is the class index. Empty: sorted unique labels")
    ordered: StrictBool = Field(False, description="ordinal classes (e.g. grades): adds quadratic-weighted kappa")
    kind: Literal["classification"] = Field("classification", description="task kind scoring the predictions "
                                            "(slidemil.pipeline.task_kinds)")

    @model_validator(mode="after")
    def _names(self) -> TaskSection:
        if not self.label.strip():
            raise ParamsError("task.label is empty; name the cohort column that holds the class of each slide")
        if any(c == "" for c in self.classes):
            raise ParamsError(f"task.classes has a blank name: {self.classes}")
        repeated = sorted({c for c in self.classes if self.classes.count(c) > 1})
        if repeated:
            raise ParamsError(f"task.classes repeats {repeated}; each class must be listed once")
        return self


@dataclass(frozen=True)
class Task:
    """A slide-level prediction task.

    Attributes:
        label: cohort column with the class name of each slide.
        classes: class names in class-index order; empty means "the sorted unique labels of the cohort"
            (see :meth:`resolve_classes`).
        ordered: whether the classes are ordinal.
        kind: the task kind (``classification``).
    """

    label: str
    classes: tuple[str, ...]
    ordered: bool
    kind: str = "classification"

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
        ParamsError: unknown key, empty label column name, blank or repeated class names.
    """
    section = read_section(params, "task", TaskSection)
    return Task(label=section.label.strip(), classes=tuple(section.classes), ordered=section.ordered,
                kind=section.kind)
