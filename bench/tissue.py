"""Benchmark of tissue detection: the optical-density default vs the previous saturation rule, on labels.

Measures, for the old (``saturation``; fluorescence keeps ``brightness``) and the new default (``auto`` →
``od`` for brightfield):
- pixel IoU against the hand-checked masks of tests/data/tissue (IHC, H&E, fluorescence);
- agreement with histolab's tissue / no-tissue tile labels (a tile shows tissue when ≥ 10 % of it is
  tissue; also given at ≥ 25 %, the tiler's default ``min_tissue_fraction``);
- the tissue-area ratio of one section seen by two scanners (the second one simulated: see
  tests/data/tissue/PROVENANCE.md — no real pair is available here) and that scan's IoU to the hand mask;
- on the demo cohort, the tile stage's patch counts and tissue mm² per slide with each method, and the
  QC images (``--qc`` folder) to look at;
- ms per mask.

Usage: python bench/tissue.py [--qc /tmp/tissue-qc]
Prints a readable table, then as its last line one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and its name would shadow the `extract` package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(REPO)
sys.path.insert(0, str(REPO / "tests" / "data" / "tissue"))

from evalset import MPP, NAMES, iou, load, load_mask, second_scanner  # noqa: E402

from slidemil.extract.sections import TissueSection  # noqa: E402
from slidemil.extract.tissue import tissue_mask  # noqa: E402

NEW = TissueSection()
OLD = TissueSection(method="saturation")


def _old_for(result_method: str) -> TissueSection:
    """The previous default: ``auto`` chose brightness for dark slides, else saturation."""
    return replace(NEW, method="brightness") if result_method == "brightness" else OLD


def hand_masks() -> list[dict]:
    rows = []
    for name in NAMES:
        rgb, hand = load(name), load_mask(name)
        start = time.perf_counter()
        new = tissue_mask(rgb, MPP[name], NEW)
        new_ms = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        old = tissue_mask(rgb, MPP[name], _old_for(new.method))
        old_ms = (time.perf_counter() - start) * 1e3
        row = {"image": name, "method": new.method, "iou_old": iou(old.mask, hand), "iou_new": iou(new.mask, hand),
               "ms_old": old_ms, "ms_new": new_ms}
        if new.method != "brightness":  # the scanner simulation is a transmitted-light model
            scan = second_scanner(rgb)
            new2, old2 = tissue_mask(scan, MPP[name], NEW).mask, tissue_mask(scan, MPP[name], OLD).mask
            row.update(scanner_area_ratio_old=old2.sum() / max(1, old.mask.sum()),
                       scanner_area_ratio_new=new2.sum() / max(1, new.mask.sum()),
                       scanner2_iou_old=iou(old2, hand), scanner2_iou_new=iou(new2, hand))
        rows.append(row)
    return rows


def histolab() -> dict:
    folder = REPO / "demo" / "real" / "tiles-histolab-fixtures"
    labels = pd.read_csv(folder / "labels.csv").dropna(subset=["tissue"])
    fractions = {"old": [], "new": []}
    for row in labels.itertuples():
        mpp = 0.5 if np.isnan(row.source_level) else 0.25 * 4**row.source_level
        rgb = np.asarray(Image.open(folder / row.file).convert("RGB"))
        fractions["new"].append(tissue_mask(rgb, mpp, NEW).mask.mean())
        fractions["old"].append(tissue_mask(rgb, mpp, OLD).mask.mean())
    truth = labels["tissue"].astype(bool).to_numpy()
    out = {"histolab_tiles": len(labels)}
    for method, values in fractions.items():
        for cut in (0.10, 0.25):
            found = np.asarray(values) >= cut
            out[f"histolab_agreement_{method}_at_{round(cut * 100)}pct"] = float((found == truth).mean())
            out[f"histolab_wrong_{method}_at_{round(cut * 100)}pct"] = list(labels["file"][found != truth])
    return out


def demo_tiles(qc: Path | None) -> pd.DataFrame:
    """Run the tile stage's per-slide function on every demo cohort slide with the old and the new method."""
    from slidemil.extract.sections import TileSection
    from slidemil.extract.tiling_pool import SlideJob, tile_one_slide
    from slidemil.pipeline.stages import tile
    from slidemil.splits.cohort import load_cohort

    cohort = load_cohort(REPO / "demo" / "cohort.csv")
    frames = []
    new_methods: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label in ("new", "old"):
            root = Path(tmp) / label
            root.mkdir()
            rows = []
            for s in cohort.itertuples(index=False):
                # the old default: brightness where auto finds a dark slide, else saturation
                method = "auto" if label == "new" else (
                    "brightness" if new_methods.get(s.slide_id) == "brightness" else "saturation")
                cfg = TileSection(tissue={"method": method})
                job = SlideJob.of(s.slide_id, s.path, s.mpp)
                rows.append(tile.store_outcome(root, tile_one_slide(job, cfg)))
            frame = pd.DataFrame(rows).set_index("slide_id")[["status", "n_patches", "tissue_mm2", "tissue_method"]]
            new_methods = new_methods or frame["tissue_method"].to_dict()
            frames.append(frame.add_suffix(f"_{label}"))
            if qc:
                (qc / label).mkdir(parents=True, exist_ok=True)
                for png in (root / "qc").glob("*.png"):
                    (qc / label / png.name).write_bytes(png.read_bytes())
    return pd.concat(frames[::-1], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qc", type=Path, help="copy the demo QC images of both methods here")
    args = parser.parse_args()

    masks = pd.DataFrame(hand_masks()).set_index("image")
    tiles = histolab()
    demo = demo_tiles(args.qc)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
        print("Hand-checked masks (pixel IoU; scanner = simulated second scanner)")
        print(masks.to_string())
        print("\nhistolab tile labels: agreement old / new = "
              f"{tiles['histolab_agreement_old_at_10pct']:.3f} / {tiles['histolab_agreement_new_at_10pct']:.3f} "
              f"(≥ 10 % tissue), {tiles['histolab_agreement_old_at_25pct']:.3f} / "
              f"{tiles['histolab_agreement_new_at_25pct']:.3f} (≥ 25 %); wrong (new, 10 %): "
              f"{tiles['histolab_wrong_new_at_10pct']}")
        print("\nDemo cohort through the tile stage")
        print(demo.to_string())
    demo_he = demo[demo.index.str.startswith("cmu1-") | (demo.index == "os1-40x")]
    result = {
        **{f"iou_{m}_{name}": round(float(masks.loc[name, f"iou_{m}"]), 4) for name in NAMES for m in ("old", "new")},
        **{f"scanner_area_ratio_{m}_{name}": round(float(masks.loc[name, f"scanner_area_ratio_{m}"]), 4)
           for name in masks.index[masks["method"] != "brightness"] for m in ("old", "new")},
        "iou_min_new": round(float(masks["iou_new"].min()), 4),
        "iou_min_old": round(float(masks["iou_old"].min()), 4),
        "mask_ms_mean_old": round(float(masks["ms_old"].mean()), 1),
        "mask_ms_mean_new": round(float(masks["ms_new"].mean()), 1),
        **{k: v for k, v in tiles.items() if not k.startswith("histolab_wrong")},
        "demo_he_patches_old": int(demo_he["n_patches_old"].sum()),
        "demo_he_patches_new": int(demo_he["n_patches_new"].sum()),
        "demo_he_tissue_mm2_old": round(float(demo_he["tissue_mm2_old"].sum()), 3),
        "demo_he_tissue_mm2_new": round(float(demo_he["tissue_mm2_new"].sum()), 3),
        "demo_ok_old": int((demo["status_old"] == "ok").sum()),
        "demo_ok_new": int((demo["status_new"] == "ok").sum()),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
