"""Reading and checking CONCH v1 checkpoints (SPEC §2, §5): local ``pytorch_model.bin``, ``hf_hub:`` or synthetic.

The official loader ignores missing and unexpected keys; here every required key must be present and
shape-exact, unknown keys fail, and what is dropped or absent is reported (``LoadReport``).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from slidemil.core.errors import SlidemilError
from slidemil.extract.conch.keys import key_table
from slidemil.extract.conch.model import ConchModel
from slidemil.extract.conch.synthetic import synthetic_state_dict

HF_REPO_URL = "https://huggingface.co/MahmoodLab/conch"
DROPPED_PREFIXES = ("text_decoder.",)  # decoder weights: absent from the public file, never used
CAPTION_PREFIXES = ("visual.attn_pool_caption.", "visual.ln_caption.")


class CheckpointError(SlidemilError):
    """A checkpoint is missing, unreadable, or its keys/shapes do not fit the model (message names the key)."""


@dataclass
class LoadReport:
    """What happened to the checkpoint's keys on the way into the model."""

    dropped: list[str] = field(default_factory=list)  # decoder and attn_mask keys removed on purpose
    missing_optional: list[str] = field(default_factory=list)  # caption-pooler keys absent from the file
    prefix_stripped: bool = False  # keys came with a ``module.`` prefix
    unwrapped: bool = False  # the file held {"state_dict": ...}
    cast_from: list[str] = field(default_factory=list)  # dtypes converted to float32


def download_hf_checkpoint(spec: str) -> Path:
    """``hf_hub:<org>/<repo>`` → local path of its ``pytorch_model.bin`` (cached by ``huggingface_hub``).

    Uses the token in ``HF_TOKEN``. Raises CheckpointError saying where to put the file when the
    download fails (no network, no access to the gated repo).
    """
    from huggingface_hub import hf_hub_download

    repo = spec.removeprefix("hf_hub:")
    try:
        return Path(hf_hub_download(repo, "pytorch_model.bin", token=os.environ.get("HF_TOKEN") or None))
    except Exception as err:  # noqa: BLE001 - any hub failure ends in the same advice
        raise CheckpointError(
            f"cannot fetch pytorch_model.bin from Hugging Face repo {repo!r} ({type(err).__name__}: {err}). "
            f"The CONCH weights are gated: request access at {HF_REPO_URL}, set HF_TOKEN and retry, or download "
            "pytorch_model.bin yourself and pass its path (checkpoint=PATH, or env CONCH_CHECKPOINT)."
        ) from err


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


def check_conch_state_dict(
    state_dict: dict[str, torch.Tensor], report: LoadReport, source: str
) -> tuple[dict[str, torch.Tensor], bool]:
    """Filter and check a CONCH v1 state dict against the key table.

    Drops ``text_decoder.*`` and ``*.attn_mask`` keys; returns (state dict to load strictly, whether the
    caption pooler is present). Raises CheckpointError naming the first missing required key, a
    wrong shape, an unknown key, or a partly present caption pooler.
    """
    kept: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(DROPPED_PREFIXES) or key.endswith(".attn_mask"):
            report.dropped.append(key)
        else:
            kept[key] = value
    table = {spec.key: spec for spec in key_table()}
    optional = [s.key for s in table.values() if not s.required]
    check_keys(kept, {k: s.shape for k, s in table.items()}, source, "CONCH v1", optional=set(optional))
    report.missing_optional = [k for k in optional if k not in kept]
    if report.missing_optional and len(report.missing_optional) != len(optional):
        raise CheckpointError(
            f"checkpoint {source} has only part of the caption pooler; missing {report.missing_optional[0]!r}"
        )
    return kept, not report.missing_optional


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 24) -> str:
    """sha256 hex digest of a file's bytes (the ``weights_sha256`` of a real checkpoint)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def parse_synthetic(checkpoint: str) -> int | None:
    """``"synthetic"`` → 1, ``"synthetic:<seed>"`` → seed, anything else → None."""
    if checkpoint == "synthetic":
        return 1
    if checkpoint.startswith("synthetic:"):
        seed = checkpoint.removeprefix("synthetic:")
        if not seed.isdigit():
            raise CheckpointError(
                f"synthetic checkpoint seed must be a non-negative integer, got {checkpoint!r}"
            )
        return int(seed)
    return None


def load_conch_model(checkpoint: str | Path | None) -> tuple[ConchModel, str, LoadReport]:
    """Build CONCH v1 from a checkpoint spec; returns (ConchModel on CPU, weights_sha256, LoadReport).

    ``checkpoint``: a local file, ``"hf_hub:MahmoodLab/conch"``, ``"synthetic[:seed]"`` (SPEC §6 weights
    made in memory, ``weights_sha256 = "synthetic:<seed>"``) or None (env ``CONCH_CHECKPOINT``).
    The model is built on the meta device and takes the checkpoint's tensors without a copy.
    Raises CheckpointError (no checkpoint given, unreadable file, key or shape mismatch).
    """
    if checkpoint is None:
        checkpoint = os.environ.get("CONCH_CHECKPOINT") or None
    if checkpoint is None:
        raise CheckpointError(
            "no CONCH checkpoint given: pass checkpoint=PATH to pytorch_model.bin (gated, "
            f"{HF_REPO_URL}), 'hf_hub:MahmoodLab/conch' with HF_TOKEN set, or 'synthetic' for random test "
            "weights; or set env CONCH_CHECKPOINT"
        )
    checkpoint = str(checkpoint)
    seed = parse_synthetic(checkpoint)
    if seed is not None:
        state_dict, report = synthetic_state_dict(seed), LoadReport()
        sha = f"synthetic:{seed}"
    else:
        path = download_hf_checkpoint(checkpoint) if checkpoint.startswith("hf_hub:") else Path(checkpoint)
        state_dict, report = read_state_dict(path)
        sha = file_sha256(path)
    model = conch_from_state_dict(state_dict, report, checkpoint)
    return model, sha, report


def conch_from_state_dict(state_dict: dict[str, torch.Tensor], report: LoadReport, source: str) -> ConchModel:
    """ConchModel holding the tensors of an unwrapped float32 state dict (strict load; see check_conch_state_dict)."""
    kept, with_caption = check_conch_state_dict(state_dict, report, source)
    with torch.device("meta"):
        model = ConchModel(with_caption_pooler=with_caption)
    model.load_state_dict(kept, strict=True, assign=True)
    return model.requires_grad_(False).eval()
