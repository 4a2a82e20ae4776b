"""Stain normalisation (torchstain Macenko / Reinhard) on the device before the encoder, and its provenance."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import rgb2lab

from slidemil.core.errors import ParamsError
from slidemil.extract.encoders import create_encoder
from slidemil.extract.encoders.preprocess import prepare_batch
from slidemil.extract.slide import open_slide
from slidemil.extract.stain import StainNormalizer, create_stain_normalizer, file_sha256

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "tissue"))
from evalset import second_scanner  # noqa: E402

SVS = "wsi-aperio-svs/CMU-1-Small-Region.svs"
# Level-0 (x, y) of 128-px H&E patches inside CMU-1's tissue; the first is the reference.
TISSUE_XY = [(900, 1500), (1000, 1700), (800, 2000), (1100, 2300), (700, 2500)]


@pytest.fixture(scope="module")
def patches(real_data) -> np.ndarray:
    """uint8 [5, 128, 128, 3] real H&E patches of CMU-1."""
    with open_slide(real_data / SVS) as slide:
        return np.stack([slide.read_region(xy, 0, (128, 128)) for xy in TISSUE_XY])


@pytest.fixture(scope="module")
def reference(patches, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("stain") / "reference.png"
    Image.fromarray(patches[0]).save(path)
    return path


def _lab_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Distance between the mean LAB colours of two patch stacks [B, H, W, 3]."""
    return float(np.linalg.norm(rgb2lab(a).reshape(-1, 3).mean(0) - rgb2lab(b).reshape(-1, 3).mean(0)))


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_normalising_a_second_scanner_brings_its_colours_back(patches, reference, method):
    normalizer = create_stain_normalizer(method, str(reference))
    other = np.stack([second_scanner(p, seed=i) for i, p in enumerate(patches[1:])])
    first = normalizer(torch.from_numpy(patches[1:])).numpy()
    second = normalizer(torch.from_numpy(other)).numpy()
    assert first.dtype == np.uint8 and first.shape == patches[1:].shape
    before = _lab_gap(patches[1:], other)
    after = _lab_gap(first, second)
    assert before > 8  # the simulated scanner is visibly different
    assert after < 0.7 * before  # Macenko: 13 → 7 LAB units; Reinhard matches the means outright
    assert normalizer.passed_through == 0


def test_glass_only_patch_is_passed_through_by_macenko(patches):
    normalizer = StainNormalizer("macenko", patches[0], "0" * 64)
    glass = np.full((2, 64, 64, 3), 243, np.uint8)
    out = normalizer(torch.from_numpy(glass)).numpy()
    np.testing.assert_array_equal(out, glass)
    assert normalizer.passed_through == 2


def test_prepare_batch_applies_the_normaliser_first(patches, reference):
    encoder = create_encoder("tiny_test")
    plain = encoder.prepare_batch(torch.from_numpy(patches))
    np.testing.assert_array_equal(plain.numpy(), prepare_batch(torch.from_numpy(patches), encoder.preprocessing,
                                                               "cpu").numpy())
    assert "stain_norm" not in encoder.describe()["preprocess"]  # off: the provenance is as before
    encoder.stain_norm = create_stain_normalizer("reinhard", str(reference))
    normed = encoder.prepare_batch(torch.from_numpy(patches))
    assert normed.shape == plain.shape and not torch.allclose(normed, plain)
    provenance = encoder.describe()["preprocess"]["stain_norm"]
    assert provenance["method"] == "reinhard" and provenance["reference_sha256"] == file_sha256(reference)


def test_reference_slide_uses_its_tissue(real_data):
    normalizer = create_stain_normalizer("macenko", str(real_data / SVS))
    assert normalizer.describe()["reference"] == "CMU-1-Small-Region.svs"
    he = normalizer._normalizer.HERef  # (3, 2) unit OD vectors (R, G, B): haematoxylin first, eosin second
    ruifrok = torch.tensor([[0.65, 0.07], [0.70, 0.99], [0.29, 0.11]])  # Ruifrok & Johnston 2001
    cosine = (he * ruifrok).sum(0) / torch.linalg.norm(ruifrok, dim=0)
    assert cosine[0] > 0.95 and cosine[1] > 0.85  # the slide's tissue gives the textbook H&E vectors


def test_bad_params_are_named():
    with pytest.raises(ParamsError, match="extract.stain_norm.reference is empty"):
        create_stain_normalizer("macenko", "")
    with pytest.raises(ParamsError, match="not found"):
        create_stain_normalizer("reinhard", "/nonexistent/ref.png")
