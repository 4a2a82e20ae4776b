"""CONCH v1 checkpoints (docs/conch.md §2, §5, §6): local ``pytorch_model.bin``, ``hf_hub:`` or synthetic, and the
CONCH key rules (decoder and ``attn_mask`` keys dropped, caption pooler optional as a whole).

The official loader ignores missing and unexpected keys; here every required key must be present and
shape-exact, unknown keys fail, and what is dropped or absent is reported (``LoadReport``). Reading the
file and the generic key check live in ``slidemil.extract.encoders.checkpoint``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from slidemil.core.hashing import file_sha256
from slidemil.extract.conch.keys import key_table
from slidemil.extract.conch.model import ConchModel
from slidemil.extract.conch.synthetic import synthetic_state_dict
from slidemil.extract.encoders.checkpoint import CheckpointError, LoadReport, check_keys, read_state_dict

HF_REPO_URL = "https://huggingface.co/MahmoodLab/conch"
DROPPED_PREFIXES = ("text_decoder.",)  # decoder weights: absent from the public file, never used
CAPTION_PREFIXES = ("visual.attn_pool_caption.", "visual.ln_caption.")


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

    ``checkpoint``: a local file, ``"hf_hub:MahmoodLab/conch"``, ``"synthetic[:seed]"`` (docs/conch.md §6 weights
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
