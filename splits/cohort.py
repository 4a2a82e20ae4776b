"""Reading the cohort table (``cohort.csv``): one row per slide, IDs as text, paths resolved.

Contract (DESIGN.md): ``slide_id`` unique and non-empty, ``path`` relative to the CSV's folder,
optional ``patient_id`` (missing column → each slide its own patient, with a warning), optional
``mpp`` override in µm/px, any label column as text.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from slidemil.core.errors import CohortError

log = logging.getLogger(__name__)


def load_cohort(path: str | Path) -> pd.DataFrame:
    """Read and minimally validate the cohort table.

    Returns a DataFrame with text columns (leading zeros kept, "NA" is a name), ``path`` resolved to
    an absolute path, ``patient_id`` filled from ``slide_id`` when the column is absent, and ``mpp``
    as float (NaN where blank). The 1-based CSV line number of each row is kept in ``row``.

    Raises:
        CohortError: file missing or empty, no ``slide_id``/``path`` column, blank or duplicate ``slide_id``,
            blank ``path``, blank ``patient_id``, non-numeric ``mpp``, one slide file listed under two
            patients. Two rows of the same patient pointing to one file are logged as a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise CohortError(f"cohort table {path} not found; set `cohort:` in params.yaml to your CSV")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        raise CohortError(f"{path} is empty: write a header row (slide_id,path,…) and one row per slide") from None
    table.columns = [c.strip() for c in table.columns]
    for column in ("slide_id", "path"):
        if column not in table.columns:
            raise CohortError(f"{path}: no {column!r} column (columns: {', '.join(table.columns)})")
    table = table.apply(lambda col: col.str.strip())
    table.insert(0, "row", range(2, len(table) + 2))  # header is line 1
    _reject_blank(table, "slide_id", path)
    _reject_blank(table, "path", path)
    dup = table[table["slide_id"].duplicated(keep=False)]
    if len(dup):
        pairs = "; ".join(f"{sid!r} on lines {', '.join(map(str, g['row']))}" for sid, g in dup.groupby("slide_id"))
        raise CohortError(f"{path}: duplicate slide_id: {pairs}; slide_id must be unique")
    if "patient_id" in table.columns:
        _reject_blank(table, "patient_id", path)
    else:
        log.warning("%s has no patient_id column: each slide is treated as its own patient", path)
        table["patient_id"] = table["slide_id"]
    table["path"] = [str((path.parent / p).resolve()) for p in table["path"]]
    _check_shared_files(table, path)
    if "mpp" in table.columns:
        table["mpp"] = [_parse_mpp(v, row, path) for v, row in zip(table["mpp"], table["row"], strict=True)]
    else:
        table["mpp"] = float("nan")
    table = table.reset_index(drop=True)
    table.attrs["path"] = str(path)  # named by messages about its cells
    return table


def _reject_blank(table: pd.DataFrame, column: str, path: Path) -> None:
    blank = table.loc[table[column] == "", "row"].tolist()
    if blank:
        raise CohortError(f"{path}: blank {column} on line(s) {', '.join(map(str, blank))}; fill them in")


def _check_shared_files(table: pd.DataFrame, path: Path) -> None:
    """Rows sharing a slide file: under two patients it is an error (which patient is it?), else a warning."""
    shared = table[table["path"].duplicated(keep=False)]
    for file, group in shared.groupby("path", sort=True):
        where = ", ".join(f"line {r} ({sid!r}, patient {pid!r})" for r, sid, pid in
                          zip(group["row"], group["slide_id"], group["patient_id"], strict=True))
        if group["patient_id"].nunique() > 1:
            raise CohortError(
                f"{path}: slide file {file} is listed under more than one patient: {where}; "
                "a slide belongs to one patient, fix patient_id or remove the extra rows"
            )
        log.warning("%s: slide file %s is listed more than once: %s; it will count twice", path, file, where)


def _parse_mpp(value: str, row: int, path: Path) -> float:
    if value == "":
        return float("nan")
    try:
        return float(value)
    except ValueError:
        raise CohortError(f"{path} line {row}: mpp {value!r} is not a number (µm per pixel, e.g. 0.25)") from None
