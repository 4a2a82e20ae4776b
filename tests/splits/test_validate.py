"""Labels of a task: empty / unknown labels, patients with conflicting labels, manifests, sites."""

from __future__ import annotations

import pandas as pd
import pytest

from slidemil.core.errors import CohortError
from slidemil.splits.cohort import load_cohort
from slidemil.splits.task import Task
from slidemil.splits.validate import check_fold_feasibility, feature_exclusions, label_cohort

CONFLICT = """slide_id,path,patient_id,label
p1-DX1,a,p1,luad
p1-DX2,b,p1,lusc
p1-DX3,c,p1,luad
p2-DX1,d,p2,luad
p2-DX2,e,p2,lusc
p3-DX1,f,p3,lusc
"""


def test_empty_and_unknown_labels_are_excluded_and_counted(write_cohort):
    cohort = load_cohort(write_cohort("slide_id,path,label\ns1,a,x\ns2,b,\ns3,c,y\ns4,d,z\n"))
    result = label_cohort(cohort, Task("label", ("x", "y"), False))
    assert result.slides["slide_id"].tolist() == ["s1", "s3"]
    assert result.excluded == {"s2": "empty label in column 'label'",
                               "s4": "unknown label 'z' (task.classes: x, y)"}
    assert label_cohort(cohort, Task("label", (), False)).classes == ("x", "y", "z")


def test_missing_label_column_is_named(write_cohort):
    cohort = load_cohort(write_cohort("slide_id,path,label\ns1,a,x\n"))
    with pytest.raises(CohortError, match="no column 'subtype'"):
        label_cohort(cohort, Task("subtype", (), False))


def test_conflicting_labels_error_by_default(write_cohort):
    cohort = load_cohort(write_cohort(CONFLICT))
    with pytest.raises(CohortError, match=r"2 patient\(s\).*p1: p1-DX1=luad, p1-DX2=lusc.*label_conflict"):
        label_cohort(cohort, Task("label", (), False))


def test_conflicting_labels_majority(write_cohort):
    result = label_cohort(load_cohort(write_cohort(CONFLICT)), Task("label", (), False), "majority")
    labels = dict(zip(result.slides["slide_id"], result.slides["label"], strict=True))
    assert labels == {"p1-DX1": "luad", "p1-DX2": "luad", "p1-DX3": "luad", "p3-DX1": "lusc"}
    assert set(result.excluded) == {"p2-DX1", "p2-DX2"}  # a 1:1 tie cannot be decided
    assert "label tie" in result.excluded["p2-DX1"]
    assert "relabelled 1 slide" in result.warnings[0]


def test_conflicting_labels_slide_level(write_cohort):
    result = label_cohort(load_cohort(write_cohort(CONFLICT)), Task("label", (), False), "slide-level")
    assert result.slides["label"].tolist() == ["luad", "lusc", "luad", "luad", "lusc", "lusc"]
    assert result.excluded == {}
    assert "slide-level" in result.warnings[0]


def test_feature_exclusions_from_manifests():
    features = pd.DataFrame({"slide_id": ["s1", "s2", "s3", "s3"], "status": ["ok", "failed", "failed", "ok"],
                             "reason": ["", "unreadable JPEG tile", "", ""]})
    tiles = pd.DataFrame({"slide_id": ["s1", "s2", "s3"], "status": ["ok", "ok", "no_tissue"],
                          "reason": ["", "", "no tissue found"]})
    excluded = feature_exclusions(["s1", "s2", "s3", "s4"], {"tiles.csv": tiles, "features.csv": features})
    assert excluded == {"s2": "features.csv: failed (unreadable JPEG tile)",
                        "s3": "tiles.csv: no_tissue (no tissue found)",
                        "s4": "not in tiles.csv (not processed yet?)"}


def test_sites_must_be_filled_and_one_per_patient(write_cohort):
    task = Task("label", (), False)
    blank = load_cohort(write_cohort("slide_id,path,patient_id,label,site\ns1,a,p1,x,A\ns2,b,p2,y,\n"))
    with pytest.raises(CohortError, match=r"blank 'site' on cohort line\(s\) 3"):
        label_cohort(blank, task, site_column="site")
    two = load_cohort(write_cohort("slide_id,path,patient_id,label,site\ns1,a,p1,x,A\ns2,b,p1,x,B\ns3,c,p2,y,B\n"))
    with pytest.raises(CohortError, match="p1 have slides at more than one 'site'"):
        label_cohort(two, task, site_column="site")


def test_feasibility_lists_each_class_and_largest_k():
    slides = pd.DataFrame({"patient_id": ["a", "b", "c", "d", "d"], "label": ["x", "x", "y", "y", "y"]})
    check_fold_feasibility(slides, ("x", "y"), 2)
    with pytest.raises(CohortError, match=r"x: 2 patient\(s\), y: 2 patient\(s\); the largest feasible number of "
                                          r"folds is 2: set split.n_folds=2"):
        check_fold_feasibility(slides, ("x", "y"), 3)


def test_a_label_column_with_one_class_is_rejected_when_classes_are_inferred():
    import pandas as pd

    from slidemil.core.errors import CohortError
    from slidemil.splits.task import Task
    from slidemil.splits.validate import label_cohort

    cohort = pd.DataFrame({"row": [2, 3, 4], "slide_id": ["a", "b", "c"], "patient_id": ["p1", "p2", "p3"],
                           "label": ["tumour", "tumour", ""]})
    with pytest.raises(CohortError, match=r"holds only 'tumour'.*at least two classes"):
        label_cohort(cohort, Task(label="label", classes=(), ordered=False), "error", "")


def test_a_class_named_by_task_but_absent_from_the_cohort_is_named():
    from slidemil.splits.validate import check_fold_feasibility

    slides = pd.DataFrame({"patient_id": ["p1", "p2", "p3"], "label": ["dense"] * 3})
    with pytest.raises(CohortError, match=r"no labelled slide of class 'sparse' although task.classes names it"):
        check_fold_feasibility(slides, ("dense", "sparse"), 3)
