"""The task section: defaults, class names as text, repeated classes."""

from __future__ import annotations

import pytest

from slidemil.core.errors import ParamsError
from slidemil.splits.task import load_task


def test_defaults_and_class_resolution():
    task = load_task({})
    assert (task.label, task.classes, task.ordered) == ("label", (), False)
    assert task.resolve_classes(["b", "a", "", "b"]) == ("a", "b")


def test_classes_read_as_text_in_given_order():
    task = load_task({"task": {"label": "grade", "classes": [3, 1, 2], "ordered": True}})
    assert task.classes == ("3", "1", "2")
    assert task.resolve_classes(["1", "2"]) == ("3", "1", "2")


@pytest.mark.parametrize("section, message", [
    ({"classes": ["a", "b", "a"]}, "repeats"),
    ({"label": " "}, "task.label is empty"),
    ({"lable": "x"}, "did you mean 'label'"),
])
def test_bad_task_sections(section, message):
    with pytest.raises(ParamsError, match=message):
        load_task({"task": section})
