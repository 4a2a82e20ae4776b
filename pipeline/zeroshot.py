"""CONCH zero-shot slide classification with MI-Zero top-k pooling (Lu et al., MICCAI 2023 / CVPR 2023
"Visual language pretrained multiple instance zero-shot transfer…"; CONCH, Nature Medicine 2024).

Pure functions: the prompt file, the tokenizer-file check, the class text embeddings (prompt averaging)
and the slide scores from stored pre-projection patch features. The stage does the I/O.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from slidemil.core.errors import ParamsError

#: sha256 of the official ``conch_byte_level_bpe_uncased.json`` (docs/conch.md §4.2).
TOKENIZER_SHA256 = "a3861e67c64d32670eb6725a8e52d7dbdd2a06646a4a3c7463052ae7110760fb"
TOKENIZER_ENV = "CONCH_TOKENIZER"
TOKENIZER_HELP = (
    "The official CONCH tokenizer file is conch_byte_level_bpe_uncased.json (sha256 "
    f"{TOKENIZER_SHA256[:12]}…): it ships in the CONCH repository (github.com/mahmoodlab/CONCH) and on "
    "Hugging Face (MahmoodLab/conch), and in the PyPI wheel `conch-fork` at "
    "conch/open_clip_custom/tokenizers/conch_byte_level_bpe_uncased.json "
    "(`pip download --no-deps conch-fork`, then unzip). Point zeroshot.tokenizer or the env "
    f"{TOKENIZER_ENV} at it."
)
PLACEHOLDER = "CLASSNAME"


@dataclass(frozen=True)
class Prompts:
    """A prompt set: synonyms per class name and templates holding the ``CLASSNAME`` placeholder."""

    classnames: dict[str, list[str]]
    templates: list[str]

    def texts(self, class_name: str) -> list[str]:
        """Every synonym × template sentence of one class (synonym-major order)."""
        return [t.replace(PLACEHOLDER, s) for s in self.classnames[class_name] for t in self.templates]


def resolve_tokenizer(param: str, environ: Mapping[str, str] = os.environ) -> Path | None:
    """The tokenizer file from the param, else env ``CONCH_TOKENIZER``; ``None`` when neither is set.

    Raises:
        ParamsError: the named file does not exist or is not the official file (sha256 differs);
            the message says where the official file lives.
    """
    value = param or environ.get(TOKENIZER_ENV, "")
    if not value:
        return None
    source = "zeroshot.tokenizer" if param else f"env {TOKENIZER_ENV}"
    path = Path(value).expanduser()
    if not path.is_file():
        raise ParamsError(f"CONCH tokenizer file {path} (from {source}) not found. {TOKENIZER_HELP}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != TOKENIZER_SHA256:
        raise ParamsError(
            f"{path} (from {source}) has sha256 {digest}, not the official CONCH tokenizer's; a different "
            f"vocabulary gives meaningless text embeddings. {TOKENIZER_HELP}"
        )
    return path


def load_prompts(path: str | Path) -> Prompts:
    """Read a prompt YAML: ``classes: {class name: [synonym, …]}``, ``templates: [str with CLASSNAME, …]``.

    Raises:
        ParamsError: file missing, not YAML, wrong layout, a class without synonyms, a template without
            the ``CLASSNAME`` placeholder.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(
            f"prompt file {path} not found; write one (classes: {{name: [synonyms]}}, templates: "
            f"[... {PLACEHOLDER} ...]) or set zeroshot.prompts"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("classes"), dict) or not data.get("templates"):
        raise ParamsError(f"{path}: expected keys 'classes' (mapping class → synonyms) and 'templates' (list)")
    classnames: dict[str, list[str]] = {}
    for name, synonyms in data["classes"].items():
        if isinstance(synonyms, str):
            synonyms = [synonyms]
        if not synonyms or not all(isinstance(s, str) and s.strip() for s in synonyms):
            raise ParamsError(f"{path}: class {name!r} needs a non-empty list of synonyms (strings)")
        classnames[str(name)] = [s.strip() for s in synonyms]
    templates = data["templates"]
    bad = [t for t in templates if not isinstance(t, str) or PLACEHOLDER not in t]
    if bad:
        raise ParamsError(f"{path}: template(s) without the {PLACEHOLDER} placeholder: {bad}")
    return Prompts(classnames=classnames, templates=list(templates))


def class_text_embeddings(
    encode_texts: Callable[[list[str]], torch.Tensor], prompts: Prompts, classes: Sequence[str]
) -> torch.Tensor:
    """Zero-shot classifier weights ``W`` [D, C] (prompt ensembling, CLIP/CONCH style).

    For each class in ``classes`` order, every synonym × template sentence is encoded (``encode_texts``:
    list of B strings → [B, D]), L2-normalised, averaged jointly over synonyms and templates, and
    L2-normalised again.

    Raises:
        ParamsError: a task class has no entry in the prompt file.
    """
    missing = [c for c in classes if c not in prompts.classnames]
    if missing:
        raise ParamsError(
            f"prompt file has no entry for class(es) {missing}; it has {sorted(prompts.classnames)}"
        )
    columns = []
    for name in classes:
        emb = F.normalize(encode_texts(prompts.texts(name)).float(), dim=-1)  # (n_syn·n_tmpl, D)
        columns.append(F.normalize(emb.mean(dim=0), dim=-1))  # (D,)
    return torch.stack(columns, dim=1)  # (D, C)


def patch_logits(features: np.ndarray, proj_contrast: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each patch to each class: ``normalize(f @ proj_contrast) @ W``.

    Args:
        features: stored CONCH pre-projection patch features [N, 512].
        proj_contrast: ``visual.proj_contrast`` [512, 512] (used as ``x @ P``).
        weights: class text embeddings [512, C] (unit columns).

    Returns:
        patch logits [N, C] in [-1, 1].
    """
    f = torch.as_tensor(features, dtype=torch.float32)
    image = F.normalize(f @ proj_contrast.float(), dim=-1)  # (N, 512)
    return image @ weights.float()  # (N, C)


def topk_pool(logits: torch.Tensor, k: int) -> torch.Tensor:
    """MI-Zero slide score [C]: per class, the mean of that class's top-min(k, N) patch logits [N, C].

    Each class ranks the patches independently.

    Raises:
        ValueError: k < 1 or an empty bag.
    """
    if k < 1:
        raise ValueError(f"top-k needs k ≥ 1, got {k}")
    if logits.shape[0] == 0:
        raise ValueError("empty bag: no patch logits to pool")
    return logits.topk(min(k, logits.shape[0]), dim=0).values.mean(dim=0)  # (C,)


def slide_scores(
    features: np.ndarray, proj_contrast: torch.Tensor, weights: torch.Tensor, topk: Sequence[int]
) -> dict[int, np.ndarray]:
    """MI-Zero scores of one slide for each k: ``{k: [C]}`` from patch features [N, 512]."""
    with torch.no_grad():
        logits = patch_logits(features, proj_contrast, weights)
        return {k: topk_pool(logits, k).numpy().astype(np.float64) for k in topk}


def scores_to_proba(scores: np.ndarray, logit_scale: float) -> np.ndarray:
    """Probabilities [S, C] = ``softmax(scores · exp(logit_scale))`` for slide scores [S, C]."""
    return torch.softmax(torch.as_tensor(scores, dtype=torch.float64) * float(np.exp(logit_scale)), dim=1).numpy()
