"""Training provenance of a model: the exact tiling and encoder its features came from.

A model applied to a new cohort must see features made the same way as in training: same tiling
(target mpp, patch size, overlap, tissue parameters) and the same encoder (id, weights digest,
preprocessing, dtype). Every slide group of a feature store carries these as attrs (DESIGN.md,
"Features"); :func:`provenance_from_store` keeps the part that matters, train stores it in each fold
checkpoint, and :func:`tile_section` / :func:`extract_section` rebuild the ``tile:`` / ``extract:``
params sections that reproduce it. The tiles' ``params_digest`` checks the rebuilt tiling: a section
that would not give the training tiles is refused, never silently used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slidemil.core.errors import SlidemilError
from slidemil.core.params import read_section
from slidemil.extract.sections import ExtractSection, TileSection, TissueSection

#: tile attrs that are the tile stage's parameters (the rest of ``tile:`` is checked via ``params_digest``)
TILE_KEYS = ("target_mpp", "patch_size", "overlap")
#: what a feature store must share with the models: (provenance key, store attr, words)
MATCH_KEYS = (("encoder_id", "encoder_id", "encoder"), ("weights_sha256", "weights_sha256", "encoder weights digest"),
              ("patch_size", "patch_size", "patch size (px at target mpp)"), ("target_mpp", "target_mpp", "mpp (µm/px)"))


class ProvenanceError(SlidemilError):
    """Features or parameters do not match what the models were trained on (the message names the difference)."""


def provenance_from_store(store: Any, slide_id: str) -> dict[str, Any]:
    """The training provenance from one slide group of a feature store.

    Args:
        store: an ``extract.store.FeatureStore``; slide_id: a slide the models were trained on.

    Returns:
        ``{encoder_id, weights_sha256, embed_dim, preprocess, dtype, features, tiling: {target_mpp,
        patch_size, overlap, tissue, params_digest, mpp_override}}`` (``mpp_override`` is the slide's mpp
        when the cohort table overrode it, else None: the tiles' ``params_digest`` includes it).
    """
    attrs = store.attrs(slide_id)
    tiling = {k: attrs.get(k) for k in TILE_KEYS}
    # the tissue parameters only (the attrs also hold results: method_used, threshold, background_rgb, …)
    tiling["tissue"] = {k: v for k, v in (attrs.get("tissue") or {}).items() if k in TissueSection.model_fields}
    tiling["params_digest"] = attrs.get("params_digest")
    tiling["mpp_override"] = attrs.get("mpp") if attrs.get("mpp_source") == "override" else None
    return {
        "encoder_id": store.encoder_id, "weights_sha256": store.weights_sha256,
        "embed_dim": int(store.embed_dim or 0), "preprocess": attrs.get("preprocess"),
        "dtype": attrs.get("dtype", "float32"), "features": str(store.path), "tiling": tiling,
    }


def check_features(provenance: Mapping[str, Any], store: Any, slide_id: str | None = None) -> None:
    """Refuse a feature store whose encoder, weights digest, patch size or mpp differ from the models'.

    Args:
        provenance: :func:`provenance_from_store` of the training features; store: the store offered;
        slide_id: a slide of ``store`` whose attrs are compared (default: its first slide).

    Raises:
        ProvenanceError: naming each differing property with both values.
    """
    ids = store.slide_ids
    if slide_id is None and not ids:
        raise ProvenanceError(f"feature store {store.path} holds no complete slide; run `slidemil extract`")
    attrs = {**store.attrs(slide_id or ids[0]), "encoder_id": store.encoder_id, "weights_sha256": store.weights_sha256}
    expected = {**provenance, **provenance.get("tiling", {})}
    diffs = [f"{words}: models {expected.get(key)!r}, store {attrs.get(attr)!r}" for key, attr, words in MATCH_KEYS
             if not _same(expected.get(key), attrs.get(attr))]
    if diffs:
        raise ProvenanceError(f"feature store {store.path} was not made like the models' training features ("
                              + "; ".join(diffs) + "); deploy with --cohort to tile and encode it as in training")


def tile_section(provenance: Mapping[str, Any], current: TileSection) -> dict[str, Any]:
    """The ``tile:`` section (a plain dict, as in params.yaml) that reproduces the training tiles.

    The recorded keys (target_mpp, patch_size, overlap, tissue) override ``current`` (today's validated
    ``tile:`` section, for the keys the attrs do not record); the result's :meth:`TileSection.digest`
    must equal the training tiles' ``params_digest``.

    Raises:
        ProvenanceError: the digest differs (a parameter not recorded in the attrs, e.g.
            ``tile.min_tissue_fraction``, was changed since training), naming the way out.
        ParamsError: the recorded values are not a valid ``tile:`` section.
    """
    tiling = provenance.get("tiling") or {}
    section = current.model_dump(mode="json")
    section.update({key: tiling[key] for key in TILE_KEYS if tiling.get(key) is not None})
    section["tissue"] = {**section["tissue"], **(tiling.get("tissue") or {})}
    rebuilt = read_section({"tile": section}, "tile", TileSection)
    digest = rebuilt.digest(tiling.get("mpp_override"))
    if tiling.get("params_digest") and digest != tiling["params_digest"]:
        raise ProvenanceError(
            f"the tiling of the training features (params digest {tiling['params_digest']}) cannot be rebuilt: "
            f"with target_mpp {rebuilt.target_mpp}, patch_size {rebuilt.patch_size} and overlap "
            f"{rebuilt.overlap} recorded, today's tile.min_tissue_fraction / max_upsample / level_tolerance / "
            f"mpp_range give digest {digest}; set them back to the values of the training run")
    return rebuilt.model_dump(mode="json")


def extract_section(provenance: Mapping[str, Any], current: ExtractSection) -> dict[str, Any]:
    """The ``extract:`` section (a plain dict) that encodes with the training encoder (same id, weights, dtype).

    Device, precision, batch size and scheduler come from ``current`` (today's validated section); the
    encoder name from the recorded id (``timm-<name>`` → ``timm:<name>``); the weights from
    ``extract.checkpoint`` / ``CONCH_CHECKPOINT`` unless the training weights were generated
    (``synthetic:…`` / ``random:…``), which are regenerated. The store written with it is checked against
    the models by :func:`check_features`.
    """
    section = current.model_dump(mode="json")
    encoder_id = str(provenance["encoder_id"])
    section["encoder"] = "timm:" + encoder_id.removeprefix("timm-") if encoder_id.startswith("timm-") else encoder_id
    weights = str(provenance.get("weights_sha256") or "")
    if weights.startswith(("synthetic:", "random:")):
        section["checkpoint"] = weights
    section["dtype"] = provenance.get("dtype") or section["dtype"]
    return section


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b
