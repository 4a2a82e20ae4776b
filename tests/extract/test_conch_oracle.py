"""slidemil's CONCH v1 against the original code, used as an oracle (``conch-fork`` on the package index).

``conch-fork`` ships the original CONCH model code and its BPE tokenizer file (CC BY-NC-ND 4.0). It is a test
dependency only: nothing of it is vendored or shipped, and the project never imports it outside this file.
Both models load the same synthetic checkpoint file (seed 1); images, texts and every output flag pair are
compared, and slidemil's ``tokenizers``-based tokenizer is compared with the original one on real prompts.
"""

from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from slidemil.extract.conch.synthetic import synthetic_state_dict
from slidemil.extract.conch.tokenizer import tokenize
from slidemil.extract.encoders import create_encoder

oracle = pytest.importorskip("conch.open_clip_custom", reason="conch-fork (the original CONCH code) not installed")

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "conch"
ATOL = 1e-4


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("conch-oracle") / "pytorch_model.bin"
    torch.save(synthetic_state_dict(1), path)
    return path


@pytest.fixture(scope="module")
def original(checkpoint_file):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = oracle.create_model("conch_ViT-B-16", checkpoint_path=str(checkpoint_file), device="cpu")
    return model.eval()


@pytest.fixture(scope="module")
def ours(checkpoint_file):
    return create_encoder("conch_v1", checkpoint=str(checkpoint_file), device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def tokenizer_file() -> Path:
    return Path(str(resources.files("conch.open_clip_custom") / "tokenizers" / "conch_byte_level_bpe_uncased.json"))


@pytest.mark.slow
def test_image_towers_agree_for_every_output_flag_pair(original, ours):
    images = torch.randn(2, 3, 448, 448, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        for proj in (False, True):
            for norm in (False, True):
                want = original.encode_image(images, proj_contrast=proj, normalize=norm)
                got = ours.model.encode_image(images, proj_contrast=proj, normalize=norm)
                assert got.shape == want.shape == (2, 512)
                np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=ATOL)


@pytest.mark.slow
def test_text_towers_agree(original, ours, tokenizer_file):
    texts = ["an H&E image of invasive ductal carcinoma.", "normal breast tissue", ""]
    ids = tokenize(texts, tokenizer_file)
    with torch.no_grad():
        want = original.encode_text(ids, normalize=True)
        got = ours.model.encode_text(ids, normalize=True)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=ATOL)


def test_tokenizer_matches_the_original(tokenizer_file):
    tok = oracle.get_tokenizer()
    prompts = [
        "an H&E image of lung adenocarcinoma.",
        "Invasive Lobular Carcinoma (ILC), Grade 2 — Ki-67 > 20%",
        "tumor " * 200,  # longer than the 128-token context: truncated the same way
        "",
        "café naïve cell: 5 µm",
    ]
    want = _original_tokenize(tok, prompts)
    got = tokenize(prompts, tokenizer_file)
    assert got.shape == want.shape == (len(prompts), 128)
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def _original_tokenize(tok, texts: list[str]) -> torch.Tensor:
    """The original ``conch.open_clip_custom.tokenize``; transformers 5 removed the ``batch_encode_plus`` it
    calls, so the same arguments go through ``__call__`` there (the same encoder underneath)."""
    if hasattr(tok, "batch_encode_plus"):
        return oracle.tokenize(tok, texts)
    ids = tok(texts, max_length=127, add_special_tokens=True, return_token_type_ids=False, truncation=True,
              padding="max_length", return_tensors="pt")["input_ids"]
    return torch.nn.functional.pad(ids, (0, 1), value=tok.pad_token_id)


def test_tokenizer_reproduces_the_reference_ids(tokenizer_file):
    expected = np.load(DATA / "expected_seed1.npz")
    ids = tokenize([str(t) for t in expected["texts"]], tokenizer_file)
    np.testing.assert_array_equal(ids.numpy(), expected["token_ids"])
