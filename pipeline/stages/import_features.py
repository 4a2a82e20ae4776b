"""Import precomputed patch features (CLAM / TRIDENT ``.h5``, or ``.pt``) into a slidemil feature store.

Each file becomes one slide group (slide_id = file name without extension) with features [N, D] and coords
[N, 2] level-0 (x, y), so `train`/`probe` read them like features from `slidemil extract`.

- ``.h5``: datasets ``features`` ([N, D] or [1, N, D]) and ``coords`` [N, 2]; attributes (patch size,
  magnification, encoder) are taken from the file (dataset or file attributes) when present.
- ``.pt``: a tensor [N, D] (CLAM ``pt_files``; coords then come from the ``.h5`` of the same name in the
  same folder or in a sibling ``h5_files`` folder) or a dict with ``features`` and ``coords``.

Encoder id, patch size and magnification must be known: from the files or from --encoder-id,
--patch-size, --magnification; a missing one is refused with a message naming the file. Every geometry
attribute the file gives is honoured (CLAM ``patch_level``/``downsample``, TRIDENT ``patch_size_level0``,
``level0_magnification``, ``target_magnification``) and they must agree, else the file is refused naming
them (see ``pipeline/import_geometry.py``). The store's ``manifest.csv`` (one row per file: ok or failed)
is written beside it, where ``split`` expects the features manifest. Files already
imported unchanged are not rewritten. Each file is imported on its own: a bad one (unreadable, without
coords, …) is reported by name and the others are imported; the exit status is 1 when any file failed.
"""

from __future__ import annotations

import argparse
import logging
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slidemil.core.errors import ParamsError, SlidemilError, StoreError

HELP = "CLAM/TRIDENT .h5/.pt features → a feature store of the slidemil contract"
NEEDS_PARAMS = False  # runs outside a project folder too
ENCODER_KEYS = ("encoder_id", "encoder", "model_name", "patch_encoder")
log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="folder of .h5 / .pt feature files (one per slide)")
    parser.add_argument("--output", type=Path, default=None,
                        help="store folder (default: data/features/<encoder_id>.zarr)")
    parser.add_argument("--encoder-id", default=None, help="encoder that made the features, if not in the files")
    parser.add_argument("--patch-size", type=int, default=None,
                        help="patch side in level-0 px, if not in the files")
    parser.add_argument("--magnification", type=float, default=None,
                        help="magnification of the patches (e.g. 20), if not in the files")
    parser.add_argument("--weights-sha256", default="unknown", help="hash of the encoder weights, if known")


def run(params: dict[str, Any], args: argparse.Namespace) -> int:
    """Import every feature file of ``args.input``, each on its own: a bad file is reported (ERROR naming the
    file and the problem) and the others are imported. Returns 0 when every file was imported, else 1.

    Raises:
        ParamsError: the folder holds no .h5 or .pt file.
    """
    from tqdm import tqdm

    folder = Path(args.input)
    files = sorted(folder.glob("*.h5")) + sorted(folder.glob("*.pt"))
    if not files:
        raise ParamsError(f"{folder}: no .h5 or .pt feature files found")
    h5_stems = {f.stem for f in files if f.suffix == ".h5"}
    files = [f for f in files if not (f.suffix == ".pt" and f.stem in h5_stems)]  # the .h5 already has both
    target: dict[str, Any] = {}  # the store all files go to: set by the first readable file
    imported, failed, rows = [], [], []
    for path in tqdm(files, desc="import", unit="slide"):
        try:
            n_patches = _import_file(path, args, target)
        except SlidemilError as exc:
            log.error("import-features: %s not imported: %s", path.name, exc)
            failed.append(path.name)
            rows.append({"slide_id": path.stem, "status": "failed", "reason": str(exc), "n_patches": 0})
        else:
            imported.append(path.name)
            rows.append({"slide_id": path.stem, "status": "ok", "reason": f"imported from {path}",
                         "n_patches": n_patches})
    output = target["writer"].path if target else "-"
    if target:
        _write_manifest(Path(output), rows)
    log.info("import-features: %d of %d files imported into %s", len(imported), len(files), output)
    if failed:
        log.warning("import-features: %d failed (see the errors above): %s", len(failed), ", ".join(failed))
    return 1 if failed else 0


def _import_file(path: Path, args: argparse.Namespace, target: dict[str, Any]) -> int:
    """Read one file and write its slide group (unless imported unchanged before); returns its number of
    patches. ``target`` holds the writer and feature width D, created from the first file.

    Raises:
        StoreError, ParamsError: the file is unreadable or incomplete, or does not fit the store.
    """
    from slidemil.core.hashing import json_sha256
    from slidemil.extract.store import FeatureStoreWriter

    features, coords, attrs = read_feature_file(path)
    attrs = _complete_attrs(path, attrs, args)
    if not target:
        output = args.output or Path("data/features") / f"{attrs['encoder_id']}.zarr"
        target["writer"] = FeatureStoreWriter(output, attrs["encoder_id"], args.weights_sha256, features.shape[1])
        target["encoder_id"], target["dim"] = attrs["encoder_id"], features.shape[1]
    writer = target["writer"]
    if (attrs["encoder_id"], features.shape[1]) != (target["encoder_id"], target["dim"]):
        raise StoreError(f"{path}: features of {attrs['encoder_id']!r} with D={features.shape[1]} do not fit the "
                         f"store {writer.path} ({target['encoder_id']!r}, D={target['dim']}); import them into "
                         "another --output")
    stat = path.stat()
    digest = json_sha256({"file": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns,
                            **{k: attrs[k] for k in ("encoder_id", "patch_size_level0", "magnification")}})
    if not writer.is_up_to_date(path.stem, digest):
        with writer.lock(path.stem) as lock:
            writer.write_slide(path.stem, features, coords, {**attrs, "inputs_digest": digest}, lock)
    return len(features)


def _write_manifest(store: Path, rows: list[dict[str, Any]]) -> None:
    """``manifest.csv`` beside the store (the features manifest ``split`` reads), with its provenance record."""
    import pandas as pd

    from slidemil.core import provenance
    from slidemil.core.atomic import write_csv

    manifest = store.parent / "manifest.csv"
    write_csv(manifest, pd.DataFrame(rows, columns=["slide_id", "status", "reason", "n_patches"]))
    provenance.record(manifest, "import-features", {"store": str(store.resolve())})


def read_feature_file(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """features [N, D] float32, coords [N, 2] int64 and the attributes found in a CLAM/TRIDENT file.

    Raises:
        StoreError: the file cannot be read (not HDF5/PyTorch, damaged), has no features/coords, or their
            row counts differ.
    """
    import numpy as np

    if path.suffix == ".h5":
        features, coords, attrs = _read_h5(path)
    else:
        features, coords, attrs = _read_pt(path)
    try:
        features = np.asarray(features, dtype=np.float32)
        coords = np.asarray(coords).reshape(-1, 2).astype(np.int64)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{path}: features/coords are not numeric arrays of the right shape ({exc})") from None
    if features.ndim == 3 and features.shape[0] == 1:
        features = features[0]
    if features.ndim != 2 or len(features) != len(coords):
        raise StoreError(f"{path}: features {features.shape} and coords {coords.shape} do not align "
                         "(need [N, D] and [N, 2])")
    return features, coords, attrs


def _read_h5(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise StoreError(f"{path}: not a readable HDF5 file ({exc}); is it truncated or of another format?") from None
    with f:
        if "features" not in f or "coords" not in f:
            raise StoreError(f"{path}: an .h5 feature file needs datasets 'features' and 'coords', "
                             f"found {sorted(f.keys())}")
        try:
            attrs: dict[str, Any] = {}
            for source in (f.attrs, f["coords"].attrs, f["features"].attrs):
                attrs.update({k: _plain(v) for k, v in source.items()})
            return f["features"][...], f["coords"][...], attrs
        except (OSError, KeyError, TypeError, ValueError) as exc:  # h5py's errors on damaged data
            raise StoreError(f"{path}: cannot read its features/coords ({type(exc).__name__}: {exc})") from None


def _read_pt(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    import numpy as np
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:  # what torch raises on bad files
        raise StoreError(f"{path}: not a readable PyTorch file ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, dict):
        if "features" not in obj or "coords" not in obj:
            raise StoreError(f"{path}: a .pt dict needs keys 'features' and 'coords', found {sorted(obj)}")
        attrs = {k: _plain(v) for k, v in obj.items() if k not in ("features", "coords") and not torch.is_tensor(v)}
        return np.asarray(obj["features"]), np.asarray(obj["coords"]), attrs
    if not torch.is_tensor(obj):
        raise StoreError(f"{path}: expected a tensor [N, D] or a dict with features/coords, got {type(obj).__name__}")
    for h5 in (path.with_suffix(".h5"), path.parent.parent / "h5_files" / f"{path.stem}.h5"):
        if h5.is_file():
            _, coords, attrs = _read_h5(h5)
            return obj.numpy(), coords, attrs
    raise StoreError(f"{path}: holds features only; put the CLAM .h5 with its coords beside it or in "
                     f"{path.parent.parent / 'h5_files'} (same name)")


def _complete_attrs(path: Path, attrs: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from slidemil.pipeline.import_geometry import GeometryError, level0_geometry

    encoder_id = args.encoder_id or _first(attrs, ENCODER_KEYS)
    try:
        patch_size, magnification = level0_geometry(attrs, args.patch_size, args.magnification)
    except GeometryError as exc:
        raise ParamsError(f"{path}: {exc}") from None
    missing = [name for name, value in (("--encoder-id", encoder_id), ("--magnification", magnification))
               if value in (None, "")]
    if missing:
        raise ParamsError(f"{path}: the file does not say its {', '.join(m.lstrip('-') for m in missing)}; "
                          f"pass {' '.join(missing)}")
    return {
        "slide_id": path.stem, "encoder_id": str(encoder_id), "patch_size_level0": int(patch_size),
        "magnification": float(magnification), "source_file": str(path.resolve()),
        "source_attrs": {k: v for k, v in attrs.items() if isinstance(v, (str, int, float, bool, list))},
        "imported": True, "status": "ok", "dtype": "float32",
    }


def _first(attrs: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((attrs[k] for k in keys if attrs.get(k) not in (None, "")), None)


def _plain(value: Any) -> Any:
    import numpy as np

    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
