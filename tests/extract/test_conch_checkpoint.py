"""CONCH checkpoint loading: strict keys with the allowlist of docs/conch.md §2, wrappers, optional caption pooler.

Manipulates the in-memory synthetic state dict (models are built on the meta device and take its
tensors without a copy, so each case costs no extra 800 MB).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from slidemil.extract.conch.checkpoint import conch_from_state_dict, load_conch_model
from slidemil.extract.conch.synthetic import synthetic_state_dict
from slidemil.extract.encoders import create_encoder
from slidemil.extract.encoders.checkpoint import (
    CheckpointError,
    LoadReport,
    read_state_dict,
    unwrap_state_dict,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "conch"
CAPTION_KEYS = 11


@pytest.fixture(scope="module")
def sd():
    return synthetic_state_dict(1)


@pytest.fixture(scope="module")
def raw224_expected():
    g2 = torch.Generator().manual_seed(2)
    torch.randn(2, 3, 448, 448, generator=g2)  # advance the generator past raw448 (docs/conch.md §6 order)
    raw224 = torch.randn(1, 3, 224, 224, generator=g2)
    return raw224, np.load(DATA / "expected_seed1.npz")["raw224_image_pc0_norm0"]


def load(state_dict: dict, report: LoadReport | None = None):
    return conch_from_state_dict(state_dict, report or LoadReport(), "test.bin")


def test_missing_required_key_is_named(sd):
    broken = {k: v for k, v in sd.items() if k != "visual.trunk.blocks.3.attn.qkv.bias"}
    with pytest.raises(CheckpointError, match=r"visual\.trunk\.blocks\.3\.attn\.qkv\.bias"):
        load(broken)


def test_wrong_shape_is_named(sd):
    broken = {**sd, "text.positional_embedding": torch.zeros(129, 768)}
    with pytest.raises(CheckpointError, match=r"text\.positional_embedding.*\[129, 768\].*\[128, 768\]"):
        load(broken)


def test_unknown_extra_key_is_named(sd):
    broken = {**sd, "visual.head.weight": torch.zeros(3)}
    with pytest.raises(CheckpointError, match=r"visual\.head\.weight"):
        load(broken)


def test_partial_caption_pooler_fails(sd):
    broken = {k: v for k, v in sd.items() if k != "visual.ln_caption.bias"}
    with pytest.raises(CheckpointError, match=r"visual\.ln_caption\.bias"):
        load(broken)


def test_module_prefix_and_state_dict_wrapper_load(sd):
    wrapped = {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}
    clean, report = unwrap_state_dict(wrapped, "wrapped.bin")
    assert report.unwrapped and report.prefix_stripped and list(clean) == list(sd)
    model = load(clean, report)
    assert model.text.cls_emb.data_ptr() == sd["text.cls_emb"].data_ptr()


def test_decoder_and_attn_mask_keys_are_dropped_and_reported(sd):
    extra = {"text_decoder.ln_final.weight": torch.ones(768), "text.attn_mask": torch.zeros(128, 128)}
    report = LoadReport()
    load({**sd, **extra}, report)
    assert sorted(report.dropped) == sorted(extra)


def test_checkpoint_without_caption_pooler_loads(sd, raw224_expected):
    no_caption = {
        k: v for k, v in sd.items() if not k.startswith(("visual.attn_pool_caption.", "visual.ln_caption."))
    }
    report = LoadReport()
    model = load(no_caption, report)
    assert len(report.missing_optional) == CAPTION_KEYS
    assert model.visual.attn_pool_caption is None
    raw224, wanted = raw224_expected
    with torch.no_grad():
        out = model.encode_image(raw224, proj_contrast=False, normalize=False)
    np.testing.assert_allclose(out.numpy(), wanted, rtol=0, atol=1e-4)
    with pytest.raises(RuntimeError, match="caption pooler"):
        model.visual.caption_tokens(raw224)


def test_half_precision_tensors_are_cast_and_reported():
    clean, report = unwrap_state_dict({"a": torch.ones(2, dtype=torch.float16), "b": torch.ones(2)}, "x.bin")
    assert clean["a"].dtype == torch.float32 and report.cast_from == ["torch.float16"]


def test_file_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "nope.bin")
    not_sd = tmp_path / "list.bin"
    torch.save([torch.ones(1)], not_sd)
    with pytest.raises(CheckpointError, match="not a state dict"):
        read_state_dict(not_sd)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="garbage.bin"):
        read_state_dict(garbage)
    legacy = tmp_path / "legacy.bin"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(read_state_dict(legacy)[0]["w"], torch.ones(2))


def test_no_checkpoint_says_where_to_get_one(monkeypatch):
    monkeypatch.delenv("CONCH_CHECKPOINT", raising=False)
    with pytest.raises(CheckpointError, match="CONCH_CHECKPOINT") as info:
        create_encoder("conch_v1")
    assert "huggingface.co/MahmoodLab/conch" in str(info.value)
    with pytest.raises(CheckpointError, match="seed"):
        load_conch_model("synthetic:abc")


def test_hf_hub_failure_gives_the_way_out(monkeypatch):
    import huggingface_hub

    def refuse(*args, **kwargs):  # never touch the network in tests
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    with pytest.raises(CheckpointError, match=r"HF_TOKEN.*checkpoint=PATH"):
        load_conch_model("hf_hub:MahmoodLab/conch")
