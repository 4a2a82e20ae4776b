"""CONCH zero-shot slide classification (MI-Zero top-k pooling), on each fold's test slides.

The class text embeddings come from the project's prompt file (zeroshot.prompts: per class, synonyms;
templates with a CLASSNAME placeholder), encoded with CONCH's text tower and averaged. Each slide's
stored pre-projection patch features are projected (visual.proj_contrast), normalised and compared with
them; the slide score of a class is the mean of its top-k patch scores, for each k of zeroshot.topk,
each k reported as its own method zeroshot@top<k> (metrics/zeroshot@top<k>.json, predictions/, plots/,
MLflow runs) beside the trained methods. metrics/zeroshot.json holds the test summary per k.

Skipped (exit 0, metrics/zeroshot.json says why) when the feature store does not exist yet (run
`slidemil extract` first), the features were not made with conch_v1 or no tokenizer file is given (zeroshot.tokenizer or env CONCH_TOKENIZER). The text tower comes from the
checkpoint the features were made with: the synthetic one for synthetic features, else env
CONCH_CHECKPOINT (zeroshot.checkpoint overrides); a different checkpoint is an error.
"""

from __future__ import annotations

import argparse
import logging
from typing import Annotated, Any

from pydantic import Field

from slidemil.core.errors import ParamsError
from slidemil.core.params import Section, read_section

HELP = "CONCH zero-shot (MI-Zero top-k) on each fold's test slides → metrics/zeroshot.json"

class ZeroshotSection(Section):
    """The ``zeroshot:`` params section."""

    features: str = Field("", description="feature store (made with conch_v1); empty: "
                          "data/features/<extract.encoder>.zarr")
    splits: str = Field("data/splits.json", description="folds (split)")
    tokenizer: str = Field("", description="conch_byte_level_bpe_uncased.json; empty: env CONCH_TOKENIZER; "
                           "none: the stage is skipped")
    checkpoint: str = Field("", description="CONCH weights for the text tower; empty: those of the features "
                            "(synthetic or env CONCH_CHECKPOINT)")
    prompts: str = Field("prompts/{label}.yaml", description="prompt file; {label} → task.label")
    topk: list[Annotated[int, Field(ge=1)]] = Field([1, 5, 10, 50, 100], min_length=1, description=(
        "MI-Zero: mean of each class's top-k patch scores, one method zeroshot@top<k> per k"))
    batch_size: int = Field(32, ge=1, description="prompts per text-encoder batch")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="cpu | cuda | cuda:<i>")
    n_bootstrap: int = Field(1000, ge=0, description="bootstrap resamples of the pooled test predictions "
                             "(95% intervals; 0: none)")
    seed: int = Field(0, description="seed of the bootstrap")
    output: str = Field("metrics/zeroshot.json", description="test summary per k, or why the stage was skipped")


SECTION = ZeroshotSection  # the CLI validates every stage's section before any stage works

ENCODER_ID = "conch_v1"
log = logging.getLogger(__name__)


def run(params: dict[str, Any], args: argparse.Namespace) -> int:
    """Run MI-Zero on every fold's test slides, or write the skip reason; returns 0 (1: no usable fold)."""
    from slidemil.core.atomic import write_json
    from slidemil.pipeline.data import features_path

    section = read_section(params, "zeroshot", ZeroshotSection)
    section = section.model_copy(update={"features": features_path(section.features, params)})
    reason = _skip_reason(section)
    if reason:
        log.warning("zeroshot skipped: %s", reason)
        write_json(section.output, {"skipped": reason})
        return 0
    summaries = _evaluate(params, section)
    # a DVC metric: one number per k (each k's files: metrics|predictions/zeroshot@top<k>.*)
    write_json(section.output, {"skipped": False,
                                "auroc": {method: s.get("test/auroc_mean") for method, s in summaries.items()}})
    return 0 if all(s.get("test/n_usable_folds") for s in summaries.values()) else 1


def _skip_reason(section: ZeroshotSection) -> str:
    """Why zero-shot cannot run (no feature store yet, features not CONCH, no tokenizer given), or "";
    a bad tokenizer file or an unreadable store raises."""
    from pathlib import Path

    from slidemil.extract.store import open_features
    from slidemil.pipeline.zeroshot import resolve_tokenizer
    from slidemil.splits.io import load_splits

    if Path(section.splits).is_file():
        kind = (load_splits(section.splits).get("task") or {}).get("type", "classification")
        if kind != "classification":
            return f"zero-shot scores classes from prompts; the task is {kind}"
    if not Path(section.features).exists():
        return f"no feature store at {section.features}: run `slidemil extract` first"
    store = open_features(section.features)
    if store.encoder_id != ENCODER_ID:
        return (f"features {section.features} were made with {store.encoder_id!r}, not {ENCODER_ID!r}; "
                "zero-shot needs CONCH's image features to match its text tower")
    if resolve_tokenizer(section.tokenizer) is None:
        return ("no CONCH tokenizer file: set zeroshot.tokenizer or env CONCH_TOKENIZER to "
                "conch_byte_level_bpe_uncased.json (CONCH repo / HF MahmoodLab/conch / PyPI conch-fork)")
    return ""


def _evaluate(params: dict[str, Any], section: ZeroshotSection) -> dict[str, dict[str, float]]:
    from dataclasses import replace

    import numpy as np
    import torch

    from slidemil.extract.conch import tokenize
    from slidemil.extract.encoders import create_encoder
    from slidemil.pipeline.crossval import FoldResult, cross_validate, tracking_for
    from slidemil.pipeline.data import load_method_data
    from slidemil.pipeline.task_kinds import Bootstrap, create_task_kind
    from slidemil.pipeline.zeroshot import (
        class_text_embeddings,
        load_prompts,
        resolve_tokenizer,
        scores_to_proba,
        slide_scores,
    )
    from slidemil.splits.task import load_task

    task = load_task(params)
    tokenizer = resolve_tokenizer(section.tokenizer)
    prompts = load_prompts(section.prompts.format(label=task.label))
    data = load_method_data(section.features, section.splits)
    weights = data.store.weights_sha256
    checkpoint = section.checkpoint or (weights if str(weights).startswith("synthetic") else None)
    encoder = create_encoder(ENCODER_ID, checkpoint=checkpoint, device=section.device)
    if encoder.weights_sha256 != weights:
        raise ParamsError(
            f"the CONCH checkpoint (weights {encoder.weights_sha256}) is not the one the features "
            f"{section.features} were made with ({weights}); set CONCH_CHECKPOINT (or zeroshot.checkpoint) "
            "to that checkpoint, or re-run extract"
        )
    model = encoder.model
    device = next(model.parameters()).device
    batch = section.batch_size

    def encode_texts(texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([
                model.encode_text(tokenize(texts[i : i + batch], tokenizer).to(device), normalize=True).float().cpu()
                for i in range(0, len(texts), batch)
            ])  # (B, 512)

    log.info("encoding %d prompts", sum(len(prompts.texts(c)) for c in data.classes if c in prompts.classnames))
    text_weights = class_text_embeddings(encode_texts, prompts, data.classes)  # (512, C)
    proj = model.visual.proj_contrast.detach().float().cpu()
    logit_scale = float(model.logit_scale.detach().cpu())
    tested = sorted({sid for fold in data.splits["folds"] for sid in fold["test"]})
    log.info("scoring %d slides with MI-Zero top-k %s", len(tested), section.topk)
    scores = {sid: slide_scores(data.load_features(sid), proj, text_weights, section.topk) for sid in tested}

    kind = create_task_kind(task, data)
    tracking = tracking_for(params, data, {"zeroshot": section.model_dump()})
    summaries: dict[str, dict[str, float]] = {}
    for k in section.topk:
        def predict(fold: dict[str, Any], child, k=k) -> FoldResult:
            matrix = np.stack([scores[sid][k] for sid in fold["test"]])  # (n_test, C)
            y = np.array([data.labels[sid] for sid in fold["test"]], dtype=int)
            return FoldResult(fold["test"], y, scores_to_proba(matrix, logit_scale))

        own = {**tracking.params, "zeroshot": {**section.model_dump(), "topk": int(k)}, "method": f"zeroshot@top{k}"}
        method_tracking = replace(tracking, params=own, shown={"zeroshot.topk": "k"})
        summary = cross_validate("zeroshot", f"top{k}", data, predict, kind=kind, tracking=method_tracking,
                                 bootstrap=Bootstrap(section.n_bootstrap, section.seed))
        summaries[f"top{k}"] = summary
    return summaries
