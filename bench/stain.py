"""Benchmark: does stain normalisation bring two scans of the same tissue closer in embedding space?

The same patches are seen by two scanners: the real pixels (scanner A) and ``evalset.second_scanner``
(scanner B, a SIMULATION: cooler white balance, paler stain, less saturation, noise, JPEG — no real pair of
scans of one section is available here). For each normalisation (none, macenko, reinhard; fitted to a
reference taken from scanner A, outside the evaluated patches) both scans are encoded and the table gives
the cosine between the two scanners' mean embeddings, the mean per-patch cosine (same tissue, paired) and
the mean LAB colour distance; ``between_patches_cosine`` (different patches of scanner A) shows how much
of the real patch-to-patch difference survives the normalisation.

Encoders (CPU, random weights — no pathology weights are available offline): ``tiny_test`` (2-block ViT,
64 px) and ``timm:resnet18`` with seeded random weights at 224 px. Random networks respond to colour and
texture statistics, so these cosines measure how much of the scanner's colour shift reaches the encoder's
input statistics, not whether a pathology encoder's semantics would move.

Sets: H&E patches of CMU-1 (level 0, 0.5 µm/px) with the CMU-1 slide as the reference slide; IHC patches
(DAB + haematoxylin) of scikit-image's colon image with one of its patches as the reference patch.

Usage: python bench/stain.py
Prints a readable table, then as its last line one JSON object with every figure.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage.color import rgb2lab

REPO = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(REPO)
sys.path.insert(0, str(REPO / "tests" / "data" / "tissue"))

from evalset import second_scanner  # noqa: E402

SVS = REPO / "demo" / "real" / "wsi-aperio-svs" / "CMU-1-Small-Region.svs"
ENCODERS = {"tiny_test": "random:0", "timm:resnet18": "random:0"}


def he_patches() -> np.ndarray:
    """uint8 [N, 224, 224, 3]: CMU-1 grid patches that are ≥ 90 % tissue."""
    from slidemil.extract.sections import TissueSection
    from slidemil.extract.slide import open_slide
    from slidemil.extract.tissue import tissue_mask

    with open_slide(SVS) as slide:
        rgb = slide.read_region((0, 0), 0, slide.dimensions)
    mask = tissue_mask(rgb[::4, ::4], slide.mpp * 4, TissueSection()).mask
    out = []
    for y in range(0, rgb.shape[0] - 224, 224):
        for x in range(0, rgb.shape[1] - 224, 224):
            if mask[y // 4:(y + 224) // 4, x // 4:(x + 224) // 4].mean() >= 0.9:
                out.append(rgb[y:y + 224, x:x + 224])
    return np.stack(out)


def ihc_patches() -> tuple[np.ndarray, np.ndarray]:
    """uint8 [15, 128, 128, 3] colon IHC patches, and the 16th patch (the reference)."""
    from skimage.data import immunohistochemistry

    rgb = immunohistochemistry()
    tiles = [rgb[y:y + 128, x:x + 128] for y in range(0, 512, 128) for x in range(0, 512, 128)]
    return np.stack(tiles[1:]), tiles[0]


def embed(encoder, patches: np.ndarray) -> torch.Tensor:
    """[N, D] float32 embeddings of uint8 patches [N, H, W, 3] through ``prepare_batch`` (stain included)."""
    return torch.cat([encoder(encoder.prepare_batch(torch.from_numpy(patches[i:i + 16])))
                      for i in range(0, len(patches), 16)])


def lab_gap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(rgb2lab(a).reshape(-1, 3).mean(0) - rgb2lab(b).reshape(-1, 3).mean(0)))


def measure(name: str, patches: np.ndarray, reference: Path) -> list[dict]:
    from slidemil.extract.encoders import create_encoder
    from slidemil.extract.stain import create_stain_normalizer

    other = np.stack([second_scanner(p, seed=i) for i, p in enumerate(patches)])
    rows = []
    for method in ("none", "macenko", "reinhard"):
        normalizer = create_stain_normalizer(method, "" if method == "none" else str(reference))
        if normalizer is None:
            a_pixels, b_pixels = patches, other
        else:
            a_pixels = normalizer(torch.from_numpy(patches)).numpy()
            b_pixels = normalizer(torch.from_numpy(other)).numpy()
        row = {"set": name, "stain_norm": method, "lab_gap": lab_gap(a_pixels, b_pixels),
               "passed_through": normalizer.passed_through if normalizer else 0}
        for encoder_name, checkpoint in ENCODERS.items():
            encoder = create_encoder(encoder_name, checkpoint)
            encoder.stain_norm = normalizer
            a, b = embed(encoder, patches), embed(encoder, other)
            key = encoder_name.replace("timm:", "")
            row[f"{key}_mean_cosine"] = float(torch.nn.functional.cosine_similarity(a.mean(0), b.mean(0), dim=0))
            row[f"{key}_paired_cosine"] = float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean())
            unit = torch.nn.functional.normalize(a, dim=1)
            between = unit @ unit.T  # (N, N): different patches of scanner A — does normalising erase them?
            row[f"{key}_between_patches_cosine"] = float(between[~torch.eye(len(a), dtype=torch.bool)].mean())
        rows.append(row)
    return rows


def main() -> None:
    import pandas as pd

    torch.manual_seed(0)
    rows = measure("he_cmu1", he_patches(), SVS)
    ihc, ref = ihc_patches()
    with tempfile.TemporaryDirectory() as tmp:
        Image.fromarray(ref).save(Path(tmp) / "ihc-reference.png")
        rows += measure("ihc_colon", ihc, Path(tmp) / "ihc-reference.png")
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 4):
        print("Scanner A vs simulated scanner B, same patches (cosine: 1 = identical)")
        print(table.to_string(index=False))
    result = {f"{r['set']}_{r['stain_norm']}_{k}": round(v, 5) for r in rows for k, v in r.items()
              if isinstance(v, float)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
