"""Loading ``params.yaml``, applying ``--set dotted.key=value`` overrides, validating a params section.

Each params section is declared once, as a pydantic model deriving from :class:`Section` (``extra="forbid"``,
ranges and enums in the field types, a ``description`` per field that ``--help`` prints).
:func:`read_section` validates the user's section against it and turns pydantic's errors into one
:class:`ParamsError` naming the dotted key (``train.epocs``) and the closest known key. Whole-number floats
are accepted for integers (``dvc exp run -S train.epochs=3.0``); booleans must be true/false.

"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from slidemil.core.errors import ParamsError

TOP_LEVEL_KEYS = ("cohort", "task", "tile", "extract", "split", "train", "probe", "zeroshot", "report", "mlflow",
                  "deploy", "heatmap")


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


def _did_you_mean(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"


# --- pydantic sections -------------------------------------------------------------------------------

S = TypeVar("S", bound="Section")


class Section(BaseModel):
    """Base of every params section model: unknown keys are errors, values are validated on assignment.

    Integers accept whole-number floats (``3.0``), as pydantic's lax mode does, but not ``3.5``; write
    booleans as ``StrictBool`` fields so ``"yes"`` or ``1`` is refused.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def read_section(params: dict[str, Any], name: str, model: type[S], prefix: str = "",
                 plugins: bool = True) -> S:
    """Validate ``params[name]`` (absent or empty → all defaults) against ``model``.

    ``prefix`` is prepended to ``name`` in messages, for a nested mapping validated on its own (e.g.
    ``probe.probe_kwargs.`` + ``knn``). ``plugins=False`` skips the checks a section makes against a
    plug-in registry (names and options of probes, which import scikit-learn): see :func:`checks_plugins`.

    Raises:
        ParamsError: one line per problem, each naming the dotted key (``train.epochs``), what it must be
            and the value given; a misspelled key names the closest known key.
    """
    raw = params.get(name)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"params section {prefix + name!r} must be a mapping, got {raw!r}")
    try:
        return model.model_validate(raw, context={"plugins": plugins})
    except ValidationError as exc:
        raise ParamsError(validation_message(prefix + name, model, exc)) from None


def checks_plugins(info: Any) -> bool:
    """Whether a section validator (given pydantic's ``ValidationInfo``) should check names and options
    against a plug-in registry: yes unless :func:`read_section` was called with ``plugins=False``."""
    return bool((info.context or {}).get("plugins", True))


def validation_message(name: str, model: type[BaseModel], exc: ValidationError) -> str:
    """Readable text of a pydantic ``ValidationError`` on section ``name``: one ``;``-joined clause per key.

    The alternatives of a union (``int | "auto"``) are joined with "or" under the one key they concern.
    """
    clauses: dict[str, list[str]] = {}
    given: dict[str, Any] = {}
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        if error["type"] == "extra_forbidden":
            dotted = ".".join([name, *loc])
            known = _fields_at(model, loc[:-1])
            clauses.setdefault(f"unknown params key {dotted!r}{_did_you_mean(loc[-1], known)}", [])
            continue
        dotted = ".".join([name, *_field_path(model, loc)])
        # pydantic says "<Input|String|List> should <rule>": kept as "must <rule>"
        subject, should, rule = error["msg"].partition(" should ")
        msg = rule if should else error["msg"][0].lower() + error["msg"][1:]
        clauses.setdefault(f"params key {dotted!r}", []).append(msg)
        given[f"params key {dotted!r}"] = error.get("input")
    parts = []
    for head, msgs in clauses.items():
        if not msgs:
            parts.append(head)
        else:
            parts.append(f"{head} must {' or '.join(dict.fromkeys(msgs))}, got {given[head]!r}")
    return "; ".join(parts)


def _field_path(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The part of an error location that names fields (nested models walked), union member tags dropped."""
    path: list[str] = []
    current: type[BaseModel] | None = model
    for part in loc:
        fields = _keys(current) if current is not None else {}
        if part not in fields:
            break
        path.append(part)
        annotation = fields[part].annotation
        current = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return path or loc[:1]


def _keys(model: type[BaseModel]) -> dict[str, Any]:
    """The params keys of ``model`` (a field's alias where it has one, e.g. ``json``) → their FieldInfo."""
    return {field.alias or name: field for name, field in model.model_fields.items()}


def section_defaults(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any, str]]:
    """``(dotted key, default, description)`` of every field of ``model``, nested models flattened (for --help)."""
    rows: list[tuple[str, Any, str]] = []
    for key, field in _keys(model).items():
        dotted = f"{prefix}{key}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(section_defaults(annotation, dotted + "."))
            continue
        default = field.get_default(call_default_factory=True)
        rows.append((dotted, default, field.description or ""))
    return rows


def _fields_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names of the (nested) model reached by ``loc``; empty if ``loc`` leaves the models."""
    for part in loc:
        field = _keys(model).get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(_keys(model))
