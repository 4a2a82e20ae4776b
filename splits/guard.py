"""Leakage guard: every training stage calls :func:`check_splits` before it trains."""

from __future__ import annotations

from typing import Any

from slidemil.core.errors import LeakageError
from slidemil.splits.io import PARTS


def check_splits(splits: dict[str, Any], feature_slide_ids: set[str] | None) -> None:
    """Fail if a patient (or slide) sits in two parts of a fold, or splits and features disagree.

    Args:
        splits: the document from :func:`splits.io.load_splits`.
        feature_slide_ids: the complete slides of the feature store (``FeatureStore.slide_ids``);
            ``None`` skips the store check.

    Raises:
        LeakageError: naming the fold, repeat, parts, patient and slides, or the slides in the splits
            that the feature store lacks, with the way out.
    """
    patients: dict[str, str] = splits["patients"]
    for fold in splits["folds"]:
        where = f"fold {fold['fold']} (repeat {fold.get('repeat', 0)})"
        owner: dict[str, tuple[str, str]] = {}  # patient_id → (part, slide_id)
        seen: dict[str, str] = {}  # slide_id → part
        for part in PARTS:
            for sid in fold[part]:
                if sid in seen:
                    raise LeakageError(f"{where}: slide {sid!r} is in both {seen[sid]} and {part}; "
                                       "re-run `slidemil split`")
                seen[sid] = part
                if sid not in patients:
                    raise LeakageError(f"{where}: slide {sid!r} in {part} is unknown to the splits' patients map; "
                                       "the splits file was edited or is corrupt, re-run `slidemil split`")
                pid = patients[sid]
                if pid in owner and owner[pid][0] != part:
                    other_part, other_sid = owner[pid]
                    raise LeakageError(
                        f"{where}: patient {pid!r} is in {other_part} ({other_sid!r}) and in {part} ({sid!r}); "
                        "slides of one patient must stay in one part, re-run `slidemil split`"
                    )
                owner.setdefault(pid, (part, sid))
    if feature_slide_ids is None:
        return
    in_splits = {sid for fold in splits["folds"] for part in PARTS for sid in fold[part]}
    missing = sorted(in_splits - set(feature_slide_ids))
    if missing:
        raise LeakageError(
            f"{len(missing)} slide(s) in the splits have no complete features: {', '.join(missing[:10])}"
            f"{' …' if len(missing) > 10 else ''}; finish `slidemil extract`, or re-run `slidemil split` with "
            "split.require_features=true so it excludes slides whose extraction failed"
        )
