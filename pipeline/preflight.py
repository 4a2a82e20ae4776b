"""Checks stages run before any work, and the batch stages' ``fail_if`` rule.

- :func:`check_ids_match`, :func:`check_slides_unchanged`: the cohort and the slide files still match what
  the stores were made from.
- :func:`failure_verdict`: ``tile.fail_if`` / ``extract.fail_if`` (validated by their sections) as a fraction
  of slides (``0.5``: fail when more than half failed) or ``all_failed`` / ``any_failed`` / ``never``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slidemil.core.errors import CohortError


def failure_verdict(statuses: Mapping[str, int], fail_if: float | str, key: str) -> tuple[bool, str]:
    """Whether a batch stage fails, and a line with the per-status counts that says why.

    ``statuses`` counts the slides per status; ``skipped`` slides (nothing to do) do not count.
    ``any_failed``: one failed slide fails; ``all_failed``: every counted slide failed; a fraction: more
    than that share of the counted slides failed.
    """
    counted = sum(n for status, n in statuses.items() if status != "skipped")
    failed = int(statuses.get("failed", 0))
    counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    if fail_if == "never":
        fails = False
    elif fail_if == "any_failed":
        fails = failed > 0
    elif fail_if == "all_failed":
        fails = counted > 0 and failed == counted
    else:
        fails = counted > 0 and failed / counted > float(fail_if)
    share = f"{failed}/{counted}" if counted else "0"
    verdict = "exceeds" if fails else "within"
    return fails, f"slides: {counts}; {share} failed, {verdict} {key}={fail_if}"


def check_ids_match(slide_ids: list[str], manifests: Mapping[str, Any]) -> None:
    """One clear error when none of the cohort's slide_ids is in a tiles/features manifest, e.g. a cohort
    keyed by patient while the (imported) features are per slide.

    ``manifests``: ``{path: DataFrame with a slide_id column}``.

    Raises:
        CohortError: listing a few unmatched cohort ids and a few ids the manifest has.
    """
    for name, table in manifests.items():
        known = set(table["slide_id"].astype(str))
        if slide_ids and known and not known.intersection(slide_ids):
            raise CohortError(
                f"none of your slide_ids match the store ({name}): cohort {_few(slide_ids)}; store {_few(sorted(known))}. "
                "The cohort's slide_id must name the slides as the features do (file names without extension); "
                "is the cohort keyed by patient?")


def _few(ids: list[str], n: int = 5) -> str:
    return ", ".join(ids[:n]) + (f", … ({len(ids)} in all)" if len(ids) > n else "")


def check_slides_unchanged(tiles, slide_ids: list[str]) -> None:
    """Refuse tiles of a slide file replaced or rewritten since tiling (its size or sampled content changed: ``core.hashing.file_fingerprint``).

    ``tiles``: the tiles store (``extract.tiles.open_tiles``); ``slide_ids``: slides tiled ok.

    Raises:
        StaleInputError: naming the slides and the stage to re-run (``slidemil tile``).
    """
    from slidemil.core.errors import StaleInputError
    from slidemil.core.hashing import file_fingerprint as slide_fingerprint

    changed = []
    for slide_id in slide_ids:
        attrs = tiles.attrs(slide_id)
        path = Path(attrs.get("slide_path", ""))
        if attrs.get("slide_fingerprint") and path.is_file() and slide_fingerprint(path) != attrs["slide_fingerprint"]:
            changed.append(f"{slide_id} ({path})")
    if changed:
        raise StaleInputError(f"slide files changed since they were tiled: {_few(changed)}; re-run `slidemil tile`")


def upstream_hint(params: dict, key: str, value: str, upstream: str, suffix: str = "") -> str:
    """A hint for a missing input ``key`` (e.g. ``extract.tiles``) whose ``value`` is not where the params say
    the stage before writes (``upstream``, e.g. ``tile.output``, plus ``suffix``); "" when they agree.

    The defaults are fixed paths under ``data/`` (as dvc.yaml expects); a changed output of one stage is not
    followed by the next stage's input.
    """
    section, _, name = upstream.partition(".")
    written = (params.get(section) or {}).get(name)
    if not written:
        return ""
    expected = str(Path(written) / suffix) if suffix else str(written)
    if Path(expected) == Path(value):
        return ""
    return f"; {upstream} is {written!r}: set {key}: {expected} (or change {upstream} back)"
