"""Dependency pins that keep known-wrong builds out."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def test_openslide_bin_excludes_builds_with_wrong_partial_bottom_tiles():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(Requirement(d) for d in deps if Requirement(d).name == "openslide-bin").specifier
    assert [v for v in ("4.0.0.9", "4.0.0.10", "4.0.0.11") if spec.contains(v)] == []
    assert all(spec.contains(v) for v in ("4.0.0.8", "4.0.0.12", "4.0.1.2"))
