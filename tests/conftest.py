"""Shared fixtures: paths to the real data bundled in ``demo/real`` (copied from shared/data with PROVENANCE)."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = REPO_ROOT / "demo" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Folder of real slides and tiles (see each sub-folder's PROVENANCE.md)."""
    return REAL_DATA
