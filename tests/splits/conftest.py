"""Small synthetic cohorts for the splits tests (TCGA-style barcodes, several slides per patient)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest


def tcga_rows(patients_per_class: dict[str, int], two_slides_every: int = 3, sites: int = 0) -> list[dict[str, str]]:
    """Rows with TCGA-style IDs: every ``two_slides_every``-th patient has a ``-DX1`` and a ``-DX2`` slide.

    With ``sites`` > 0 the tissue source site (barcode field 2) cycles over that many sites.
    """
    rows = []
    n = 0
    for label, count in patients_per_class.items():
        for _ in range(count):
            site = f"S{n % sites}" if sites else f"A{n % 7}"
            patient = f"TCGA-{site}-{n:04d}"
            n_slides = 2 if n % two_slides_every == 0 else 1
            for dx in range(1, n_slides + 1):
                slide = f"{patient}-01Z-00-DX{dx}"
                rows.append({"slide_id": slide, "path": f"slides/{slide}.svs", "patient_id": patient,
                             "label": label, "site": site})
            n += 1
    return rows


@pytest.fixture
def tcga() -> Callable[..., list[dict[str, str]]]:
    """The :func:`tcga_rows` builder (a fixture, since test modules cannot import conftest)."""
    return tcga_rows


@pytest.fixture
def write_cohort(tmp_path: Path) -> Callable[..., Path]:
    """Write rows (list of dicts, or raw CSV text) to ``tmp_path/cohort.csv`` and return its path."""

    def write(rows: list[dict[str, str]] | str, name: str = "cohort.csv") -> Path:
        path = tmp_path / name
        if isinstance(rows, str):
            path.write_text(rows, encoding="utf-8")
        else:
            pd.DataFrame(rows).to_csv(path, index=False)
        return path

    return write
