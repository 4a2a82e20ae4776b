"""Loading ``params.yaml``, applying ``--set dotted.key=value`` overrides, validating a stage section.

Each stage module declares its defaults as a nested ``DEFAULTS`` dict; ``stage_params`` merges the
user's section onto them and rejects unknown (misspelled) keys and values of the wrong type before any
heavy work starts.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import yaml

from slidemil.core.errors import ParamsError

TOP_LEVEL_KEYS = ("cohort", "task", "tile", "extract", "split", "train", "probe", "zeroshot", "report", "mlflow")


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Read the params file and apply ``overrides`` (``["train.lr=1e-4", …]``, values parsed as YAML).

    Raises:
        ParamsError: file missing or not a mapping, unknown top-level key, malformed override.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file {path} not found; run from the project folder or pass --params FILE")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(params, dict):
        raise ParamsError(f"{path} must hold a mapping of sections, got {type(params).__name__}")
    for item in overrides or []:
        apply_override(params, item)
    for key in params:
        if key not in TOP_LEVEL_KEYS:
            raise ParamsError(f"{path}: unknown top-level key {key!r}{_did_you_mean(key, TOP_LEVEL_KEYS)}")
    return params


def apply_override(params: dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` override in place (the syntax of ``dvc exp run -S``)."""
    if "=" not in item:
        raise ParamsError(f"--set {item!r}: expected dotted.key=value, e.g. tile.target_mpp=1.0")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ParamsError(f"--set {item!r}: empty key segment")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ParamsError(f"--set {item!r}: value is not valid YAML: {exc}") from exc
    node = params
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ParamsError(f"--set {item!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def stage_params(params: dict[str, Any], section: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """Return ``params[section]`` merged onto ``defaults``, validated.

    Raises:
        ParamsError: naming the unknown key (with the closest known one) or the key whose value has
            the wrong type.
    """
    user = params.get(section) or {}
    if not isinstance(user, dict):
        raise ParamsError(f"params section {section!r} must be a mapping, got {type(user).__name__}")
    return _merge(copy.deepcopy(defaults), user, section)


def _merge(defaults: dict[str, Any], user: dict[str, Any], prefix: str) -> dict[str, Any]:
    for key, value in user.items():
        dotted = f"{prefix}.{key}"
        if key not in defaults:
            raise ParamsError(f"unknown params key {dotted!r}{_did_you_mean(key, defaults)}")
        default = defaults[key]
        if isinstance(default, dict) and not default:  # an empty default mapping is free-form
            if not isinstance(value, dict):
                raise ParamsError(f"params key {dotted!r} must be a mapping, got {value!r}")
            defaults[key] = value
        elif isinstance(default, dict):
            if not isinstance(value, dict):
                raise ParamsError(f"params key {dotted!r} must be a mapping, got {value!r}")
            defaults[key] = _merge(default, value, dotted)
        else:
            defaults[key] = _check_type(dotted, default, value)
    return defaults


def _check_type(dotted: str, default: Any, value: Any) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ParamsError(f"params key {dotted!r} must be true or false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, str) and default == "auto" and not isinstance(value, dict):
        return value
    if isinstance(default, (int, float)) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(default, list) and isinstance(value, (list, tuple)):
        return list(value)
    if not isinstance(value, type(default)):
        raise ParamsError(
            f"params key {dotted!r} must be of type {type(default).__name__} (like {default!r}), got {value!r}"
        )
    return value


def _did_you_mean(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"
