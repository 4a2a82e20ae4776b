"""Cohort-table loading: IDs as text, blank and duplicate IDs, one file under two patients."""

from __future__ import annotations

import logging

import pytest

from slidemil.core.errors import CohortError
from slidemil.splits.cohort import load_cohort


def test_ids_are_text_leading_zeros_and_na_kept(write_cohort):
    path = write_cohort("slide_id,path,patient_id,label\n007,a.svs,NA,x\nNA,b.svs,0012,y\n")
    table = load_cohort(path)
    assert table["slide_id"].tolist() == ["007", "NA"]
    assert table["patient_id"].tolist() == ["NA", "0012"]
    assert table["path"].tolist() == [str(path.parent / "a.svs"), str(path.parent / "b.svs")]


def test_blank_slide_and_patient_ids_name_their_lines(write_cohort):
    with pytest.raises(CohortError, match=r"blank slide_id on line\(s\) 3"):
        load_cohort(write_cohort("slide_id,path,patient_id\ns1,a.svs,p1\n,b.svs,p2\n"))
    with pytest.raises(CohortError, match=r"blank patient_id on line\(s\) 2, 4"):
        load_cohort(write_cohort("slide_id,path,patient_id\ns1,a.svs,\ns2,b.svs,p2\ns3,c.svs, \n"))


def test_duplicate_slide_id_names_both_lines(write_cohort):
    with pytest.raises(CohortError, match=r"'s1' on lines 2, 4"):
        load_cohort(write_cohort("slide_id,path,patient_id\ns1,a.svs,p1\ns2,b.svs,p2\ns1,c.svs,p3\n"))


def test_one_file_under_two_patients_is_rejected(write_cohort):
    text = "slide_id,path,patient_id\ns1,dir/a.svs,p1\ns2,b.svs,p2\ns3,dir/../dir/a.svs,p3\n"
    with pytest.raises(CohortError, match=r"more than one patient: line 2 \('s1', patient 'p1'\), line 4"):
        load_cohort(write_cohort(text))


def test_one_file_twice_for_one_patient_is_reported(write_cohort, caplog):
    text = "slide_id,path,patient_id\ns1,a.svs,p1\ns2,a.svs,p1\ns3,b.svs,p2\n"
    with caplog.at_level(logging.WARNING, logger="slidemil.splits.cohort"):
        table = load_cohort(write_cohort(text))
    assert len(table) == 3
    assert "listed more than once" in caplog.text and "line 3 ('s2'" in caplog.text
