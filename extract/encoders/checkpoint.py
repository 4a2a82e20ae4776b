"""Loading encoder weights from a ``torch.save``d state dict, with strict key and shape checks.

Used by every encoder that takes a local checkpoint (CONCH v1, timm models): the file is read weights-only
(no pickle code runs), unwrapped, cast to float32, and its keys must match the model exactly; the error
names the first key that does not. The weights' identity is ``slidemil.core.hashing.file_sha256``.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from slidemil.core.errors import SlidemilError


class CheckpointError(SlidemilError):
    """A checkpoint is missing, unreadable, or its keys/shapes do not fit the model (message names the key)."""


@dataclass
class LoadReport:
    """What happened to the checkpoint's keys on the way into the model."""

    dropped: list[str] = field(default_factory=list)  # keys the model's rules remove (CONCH: text decoder)
    missing_optional: list[str] = field(default_factory=list)  # optional keys absent (CONCH: caption pooler)
    prefix_stripped: bool = False  # keys came with a ``module.`` prefix
    unwrapped: bool = False  # the file held {"state_dict": ...}
    cast_from: list[str] = field(default_factory=list)  # dtypes converted to float32


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Load a ``torch.save``d state dict (weights only, CPU, memory-mapped where the format allows).

    Unwraps ``{"state_dict": ...}`` and strips a ``module.`` prefix; values are float32 tensors.
    Raises CheckpointError if the file is missing or is not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist; pass the path of pytorch_model.bin")
    # memory-map the zip format (no copy of 800 MB); the legacy torch.save format cannot be mapped
    use_mmap = zipfile.is_zipfile(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    except Exception as err:
        raise CheckpointError(
            f"cannot read checkpoint {path} as a weights-only torch file ({type(err).__name__}: {err})"
        ) from err
    return unwrap_state_dict(obj, str(path))


def unwrap_state_dict(obj: object, source: str) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """``{"state_dict": sd}`` → sd; ``module.`` prefixes stripped; tensors cast to float32 (report records it)."""
    report = LoadReport()
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj, report.unwrapped = obj["state_dict"], True
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {source} is not a state dict (a mapping of names to tensors)")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if key.startswith("module."):
            key, report.prefix_stripped = key.removeprefix("module."), True
        if value.is_floating_point() and value.dtype != torch.float32:
            if str(value.dtype) not in report.cast_from:
                report.cast_from.append(str(value.dtype))
            value = value.float()
        out[key] = value
    return out, report


def check_keys(
    state_dict: dict[str, torch.Tensor],
    expected: dict[str, tuple[int, ...]],
    source: str,
    model_name: str,
    optional: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Fail unless ``state_dict`` has exactly the ``expected`` keys (``optional`` ones may be absent) and shapes.

    Raises CheckpointError naming the first unknown key, wrong shape or missing key.
    """
    unknown = [k for k in state_dict if k not in expected]
    if unknown:
        raise CheckpointError(
            f"checkpoint {source} has {len(unknown)} key(s) {model_name} does not have, first {unknown[0]!r}; "
            f"is it a {model_name} checkpoint?"
        )
    for key, shape in expected.items():
        if key in state_dict and tuple(state_dict[key].shape) != tuple(shape):
            raise CheckpointError(
                f"checkpoint {source}: {key!r} has shape {list(state_dict[key].shape)}, "
                f"{model_name} expects {list(shape)}"
            )
    missing = [k for k in expected if k not in state_dict and k not in optional]
    if missing:
        raise CheckpointError(
            f"checkpoint {source} lacks {len(missing)} required {model_name} key(s), first {missing[0]!r}"
        )
