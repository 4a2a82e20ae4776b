"""Atomic writes and the plug-in registry."""

import json

import pytest

from slidemil.core.atomic import atomic_path, write_json
from slidemil.core.registry import Registry


def test_atomic_write_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary left behind


def test_write_json_handles_numpy_scalars(tmp_path):
    import numpy as np

    write_json(tmp_path / "m.json", {"auroc": np.float32(0.5), "n": np.int64(3), "nan": float("nan")})
    text = (tmp_path / "m.json").read_text()
    assert '"auroc": 0.5' in text and '"n": 3' in text and "NaN" in text


def test_registry_rejects_duplicates_and_suggests_names():
    reg: Registry = Registry("MIL head")
    reg.register("abmil")(object)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("abmil")(object)
    with pytest.raises(KeyError, match="Did you mean 'abmil'"):
        reg.get("abmil_")
    assert reg.names() == ["abmil"] and "abmil" in reg


def test_atomic_files_get_the_usual_mode_not_mkstemps_0600(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644


def test_unknown_plugin_is_a_user_error_and_a_key_error():
    from slidemil.core.errors import SlidemilError

    reg: Registry = Registry("encoder")
    with pytest.raises(SlidemilError) as info:
        reg.get("nonexistent")
    assert isinstance(info.value, KeyError) and str(info.value).startswith("unknown encoder 'nonexistent'")
