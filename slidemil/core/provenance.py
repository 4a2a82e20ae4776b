"""Provenance records: what each stage output was made from, so a consumer never uses a stale input.

Every stage output file (``data/tiles/manifest.csv``, ``data/features/manifest.csv``, ``data/splits.json``)
gets a sidecar ``<output>.provenance.json``::

    {"stage": "split", "complete": true, "digest": "<sha256 of the output file>",
     "inputs": {"data/features/manifest.csv": "<sha256>", "split params": "<sha256>", …}}

A stage calls :func:`begin` before any work (the sidecar then says ``complete: false``, so an older output
left by a run that fails or is interrupted no longer looks current) and :func:`record` once the output is
written. A consumer calls :func:`check` (or :func:`check_chain` to walk back through every recorded input
file): it raises :class:`StaleInputError` naming the stage to re-run when an output is unfinished, was
replaced after its record, or was made from an input file that has changed since.

An output without a sidecar (written before records existed, or by hand) is accepted with a warning.
Written by hand rather than with DVC's lock file because stages also run by hand, outside ``dvc repro``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slidemil.core.atomic import write_json
from slidemil.core.errors import StaleInputError
from slidemil.core.hashing import file_sha256, json_sha256

SUFFIX = ".provenance.json"

log = logging.getLogger(__name__)


def record_path(output: str | os.PathLike) -> Path:
    """The sidecar of ``output``: ``<output>.provenance.json`` beside it."""
    output = Path(output)
    return output.with_name(output.name + SUFFIX)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes."""
    return file_sha256(path)


def value_digest(obj: Any) -> str:
    """SHA-256 (hex) of ``obj`` as canonical JSON (sorted keys, compact), e.g. a params section."""
    return json_sha256(obj, compact=True)


def begin(output: str | os.PathLike, stage: str) -> None:
    """Mark ``output`` as being rewritten by ``stage``: until :func:`record`, consumers refuse it."""
    write_json(record_path(output), {"stage": stage, "complete": False})


def record(output: str | os.PathLike, stage: str, inputs: Mapping[str, str]) -> dict[str, Any]:
    """Record that ``stage`` finished ``output`` (a file) from ``inputs`` (name or path → digest).

    An input named by the path of another recorded output is followed by :func:`check_chain`.
    Returns the record written.
    """
    entry = {"stage": stage, "complete": True, "digest": file_digest(output), "inputs": dict(inputs)}
    write_json(record_path(output), entry)
    return entry


def read_record(output: str | os.PathLike) -> dict[str, Any] | None:
    """The record of ``output``, or None when it has none (written before records existed, or by hand)."""
    path = record_path(output)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {"stage": "?", "complete": False}


def check(output: str | os.PathLike, stage: str, expected: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """Check that ``output`` is a finished, unmodified output of ``stage`` made from ``expected`` inputs.

    Args:
        output: the output file; stage: the command that makes it (named in the message);
        expected: input name → digest the caller computes now; only the names given are compared.

    Returns the record (None, with a warning, when ``output`` has no record).

    Raises:
        StaleInputError: ``output`` is missing, unfinished (its stage failed or was interrupted), was
            rewritten after its record, or an expected input differs from the one it was made from.
    """
    output = Path(output)
    rerun = f"re-run `slidemil {stage}` (or `dvc repro`)"
    entry = read_record(output)
    if not output.is_file():
        raise StaleInputError(f"{output} does not exist; {rerun}")
    if entry is None:
        log.warning("%s has no provenance record (made by an older version?); cannot check that it is current",
                    output)
        return None
    if not entry.get("complete"):
        raise StaleInputError(f"{output} is stale: the last `slidemil {stage}` did not finish; {rerun}")
    if entry.get("digest") != file_digest(output):
        raise StaleInputError(f"{output} was changed after `slidemil {stage}` wrote it; {rerun}")
    made_from = entry.get("inputs", {})
    for name, digest in (expected or {}).items():
        if made_from.get(name) != digest:
            raise StaleInputError(f"{output} was made from another {name} than the current one; {rerun}")
    return entry


def check_chain(output: str | os.PathLike, stage: str) -> None:
    """:func:`check` ``output`` and, recursively, every recorded input that is a file with a record.

    The inputs' own chains are checked first, so the message names the most upstream stage to re-run (then
    the ones below it, in order): after re-tiling, a consumer of the splits is told to re-run ``extract``,
    then ``split``. An input file whose digest differs from the recorded one was re-made after ``output``:
    ``stage`` must re-run. Relative input paths resolve against the current folder (the project folder).

    Raises:
        StaleInputError: see :func:`check`.
    """
    entry = check(output, stage)
    if entry is None:
        return
    inputs = entry.get("inputs", {})
    upstreams = {name: read_record(name) for name in inputs if Path(name).is_file()}
    upstreams = {name: record for name, record in upstreams.items() if record is not None}
    try:
        for name, upstream in upstreams.items():
            check_chain(name, str(upstream.get("stage")))
    except StaleInputError as exc:
        raise StaleInputError(f"{exc}; then re-run `slidemil {stage}`") from None
    for name, upstream in upstreams.items():
        if file_digest(name) != inputs[name]:
            raise StaleInputError(f"{output} was made from an older {name} (re-made by `slidemil "
                                  f"{upstream.get('stage')}` since); re-run `slidemil {stage}` (or `dvc repro`)")
