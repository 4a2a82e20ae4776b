"""CONCH v1 equals the original code: outputs on the docs/conch.md §6 synthetic checkpoint vs expected_seed1.npz.

The checkpoint is regenerated here (seed 1), saved once as pytorch_model.bin in a temporary folder and loaded
through ``create_encoder`` like a user's file. Forward passes at 448 px cost seconds on CPU: kept few.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from slidemil.extract.conch import checkpoint as conch_checkpoint
from slidemil.extract.conch.synthetic import state_dict_sha256, synthetic_state_dict
from slidemil.extract.encoders import create_encoder

DATA = Path(__file__).resolve().parents[1] / "data" / "conch"
ATOL = 1e-4
TILE = "tissue-level0-4302-10273-4814-10785.png"  # 512x512 H&E crop


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(DATA / "expected_seed1.npz"))


@pytest.fixture(scope="module")
def synthetic_sd():
    return synthetic_state_dict(1)


@pytest.fixture(scope="module")
def checkpoint_file(synthetic_sd, tmp_path_factory):
    path = tmp_path_factory.mktemp("conch") / "pytorch_model.bin"
    torch.save(synthetic_sd, path)
    yield path
    path.unlink()


@pytest.fixture(scope="module")
def encoder(checkpoint_file):
    return create_encoder("conch_v1", checkpoint=str(checkpoint_file), device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def inputs():
    """docs/conch.md §6 inputs: raw448 [2,3,448,448], raw224 [1,3,224,224], three uint8 RGB images."""
    g2 = torch.Generator().manual_seed(2)
    raw448 = torch.randn(2, 3, 448, 448, generator=g2)
    raw224 = torch.randn(1, 3, 224, 224, generator=g2)
    images = [
        torch.randint(0, 256, (h, w, 3), generator=g2, dtype=torch.uint8)
        for h, w in [(448, 448), (512, 512), (300, 700)]
    ]
    return raw448, raw224, images


def assert_close(actual: torch.Tensor, wanted: np.ndarray) -> None:
    np.testing.assert_allclose(actual.detach().float().numpy(), wanted, rtol=0, atol=ATOL)


def test_synthetic_state_dict_sha256(synthetic_sd, expected):
    assert len(synthetic_sd) == 326
    assert state_dict_sha256(synthetic_sd) == str(expected["state_dict_sha256"])


def test_file_checkpoint_identity(encoder, checkpoint_file, expected):
    digest = hashlib.sha256(checkpoint_file.read_bytes()).hexdigest()
    assert encoder.weights_sha256 == digest
    assert encoder.model.logit_scale.item() == pytest.approx(float(expected["logit_scale"]), abs=1e-6)
    assert encoder.load_report["missing_optional"] == [] and encoder.load_report["dropped"] == []
    assert encoder.embed_dim == 512 and encoder.input_size == 448
    assert tuple(encoder.model.visual.proj_contrast.shape) == (512, 512)


@pytest.mark.parametrize(
    ("proj", "norm", "batch"), [(False, False, 2), (True, True, 2), (False, True, 1), (True, False, 1)]
)
def test_encode_image_flag_pairs(encoder, inputs, expected, proj, norm, batch):
    # the two mixed pairs run on the first image only to keep CPU time down
    raw448 = inputs[0][:batch]
    with torch.no_grad():
        out = encoder.model.encode_image(raw448, proj_contrast=proj, normalize=norm)
    assert out.shape == (batch, 512)
    assert_close(out, expected[f"raw448_image_pc{int(proj)}_norm{int(norm)}"][:batch])


def test_store_embedding_is_pre_projection(encoder, inputs, expected):
    """``encoder(x)`` is encode_image(proj_contrast=False, normalize=False) of a 224 input (run-time pos resampling)."""
    out = encoder(inputs[1])
    assert out.dtype == torch.float32 and out.shape == (1, 512)
    assert_close(out, expected["raw224_image_pc0_norm0"])


def test_pil_preprocessing_matches_original(encoder, inputs, expected):
    batch = torch.stack([encoder.preprocess(Image.fromarray(img.numpy())) for img in inputs[2]])
    assert batch.shape == (3, 3, 448, 448)
    assert_close(batch.mean(dim=(2, 3)), expected["pil_preprocessed_mean"])
    assert_close(
        batch.reshape(3, -1)[:, expected["pil_preprocessed_sample_index"]],
        expected["pil_preprocessed_sample"],
    )


def test_pil_image_features_and_zero_shot_projection(encoder, inputs, expected):
    batch = torch.stack([encoder.preprocess(Image.fromarray(img.numpy())) for img in inputs[2]])
    features = encoder(batch)
    assert_close(features, expected["pil_image_pc0_norm0"])
    # MI-Zero path: stored pre-projection features → contrastive space, equals encode_image(x) (docs/conch.md §3.3)
    assert_close(
        F.normalize(encoder.model.visual.forward_project(features), dim=-1), expected["pil_image_pc1_norm1"]
    )


def test_encode_text(encoder, expected):
    ids = torch.from_numpy(expected["token_ids"])  # [6, 128]: empty text, 200-word text (truncated), …
    with torch.no_grad():
        assert_close(encoder.model.encode_text(ids, normalize=False), expected["text_norm0"])
        # the normalize flag on two rows only (each text pass costs a ViT-B-sized forward)
        assert_close(encoder.model.encode_text(ids[1:3]), expected["text_norm1"][1:3])


def test_device_preprocessing_close_to_pil_on_real_tiles(encoder, real_data):
    tile = Image.open(real_data / "tiles-histolab-fixtures" / TILE).convert("RGB")
    assert tile.size == (512, 512)
    reference = encoder.preprocess(tile)[None]
    on_device = encoder.prepare_batch(torch.from_numpy(np.asarray(tile).copy())[None])
    assert on_device.shape == reference.shape == (1, 3, 448, 448) and on_device.device == encoder.device
    features = encoder(torch.cat([reference, on_device]))
    assert F.cosine_similarity(features[:1], features[1:]).item() >= 0.999


def test_bf16_autocast_close_to_fp32(checkpoint_file, inputs, expected):
    bf16 = create_encoder("conch_v1", checkpoint=str(checkpoint_file), precision="bf16")
    assert bf16.precision == "bf16"
    out = bf16(inputs[1])
    assert out.dtype == torch.float32
    wanted = torch.from_numpy(expected["raw224_image_pc0_norm0"])
    assert not torch.equal(out, wanted)  # autocast really ran in bf16
    assert F.cosine_similarity(out, wanted).item() >= 0.999  # stated tolerance: cosine 0.999 to fp32


def test_synthetic_spec_and_env_fallback(synthetic_sd, checkpoint_file, inputs, expected, monkeypatch):
    # "synthetic" builds the seed-1 weights in memory; reuse the fixture's tensors instead of 800 MB more
    calls = []
    monkeypatch.setattr(
        conch_checkpoint, "synthetic_state_dict", lambda seed: calls.append(seed) or synthetic_sd
    )
    enc = create_encoder("conch_v1", checkpoint="synthetic")
    assert calls == [1] and enc.weights_sha256 == "synthetic:1"
    assert enc.model.visual.proj_contrast.data_ptr() == synthetic_sd["visual.proj_contrast"].data_ptr()
    enc = create_encoder("conch_v1", checkpoint="synthetic:7")
    assert calls == [1, 7] and enc.weights_sha256 == "synthetic:7"
    monkeypatch.setenv("CONCH_CHECKPOINT", str(checkpoint_file))
    enc = create_encoder("conch_v1")
    assert_close(enc(inputs[1]), expected["raw224_image_pc0_norm0"])
