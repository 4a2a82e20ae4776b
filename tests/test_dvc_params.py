"""dvc.yaml: each stage lists every params section its command reads (DVC re-runs a stage only for listed
params), and every stage that logs to MLflow has a plain `cache: false` out, which keeps DVC from
restoring it from the run-cache (https://dvc.org/doc/user-guide/pipelines/run-cache)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"slidemil.pipeline": ROOT / "pipeline", "slidemil.splits": ROOT / "splits"}

# how the code reads a params section: stage_params/read_section(params, "x"), params["x"], params.get("x"),
# and the helpers that read one for the caller
_READS = [
    (re.compile(r"(?:stage_params|read_section)\(\s*params,\s*\"(\w+)\""), None),
    (re.compile(r"\bparams(?:\[|\.get\()\"(\w+)\""), None),
    (re.compile(r"\bload_task\(params"), "task"),
    (re.compile(r"\bfeatures_path\([^)]*params\)"), "extract"),
]
_IMPORT = re.compile(r"from (slidemil\.(?:pipeline|splits)[\w.]*) import ([\w, ()\n]+)|import (slidemil\.(?:pipeline|splits)[\w.]*)")


def _module_file(name: str) -> Path | None:
    for package, folder in PACKAGES.items():
        if name == package or name.startswith(package + "."):
            rel = name[len(package) + 1:].replace(".", "/") if name != package else ""
            for path in (folder / f"{rel}.py", folder / rel / "__init__.py"):
                if path.is_file():
                    return path
    return None


def sections_read(module: str) -> set[str]:
    """Params sections read by ``module`` and the slidemil.pipeline/splits modules it imports (transitively)."""
    seen: set[Path] = set()
    todo = [_module_file(module)]
    sections: set[str] = set()
    while todo:
        path = todo.pop()
        if path is None or path in seen or path.name == "cli.py":
            continue
        seen.add(path)
        text = path.read_text()
        for pattern, fixed in _READS:
            if fixed is None:
                sections.update(pattern.findall(text))
            elif pattern.search(text):
                sections.add(fixed)
        for match in _IMPORT.finditer(text):
            base = match.group(1) or match.group(3)
            todo.append(_module_file(base))
            for name in re.findall(r"\w+", match.group(2) or ""):
                todo.append(_module_file(f"{base}.{name}"))
    return sections


def _stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", list(_stages()))
def test_stage_lists_every_section_its_command_reads(name):
    from slidemil.pipeline.cli import STAGES

    stage = _stages()[name]
    command = stage["cmd"].split()[1]
    read = sections_read(STAGES[command])
    listed = set(stage.get("params", []))
    assert read, f"no params read found for {command}: the scan is broken"
    assert read <= listed, f"dvc.yaml stage {name} reads {sorted(read - listed)} without listing them"
    assert not any("." in p for p in listed), f"{name}: list whole sections, not single keys: {sorted(listed)}"


@pytest.mark.parametrize("name", ["train", "probe", "zeroshot", "report"])
def test_mlflow_stages_never_restored_from_run_cache(name):
    outs = _stages()[name].get("outs", [])
    uncached = [o for o in outs if isinstance(o, dict) and next(iter(o.values())).get("cache") is False]
    assert uncached, f"stage {name} logs to MLflow but DVC's run-cache could restore it (no plain cache: false out)"
