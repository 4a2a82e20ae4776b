"""CONCH tokenization wrapper: BOS/EOS, truncation to 127, the extra pad column, the empty string.

The official tokenizer file is CC BY-NC-ND and not in the repo: a small byte-level BPE with the same
normaliser, pre-tokenizer and BOS/EOS template is trained here; one test compares with the official
ids when ``CONCH_TOKENIZER`` points to the real file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from slidemil.extract.conch.tokenizer import TokenizerError, tokenize

DATA = Path(__file__).resolve().parents[1] / "data" / "conch"
SPECIALS = ["<pad>", "<start_of_text>", "<end_of_text>"]
CORPUS = [
    "an H&E image of invasive ductal carcinoma",
    "lymphocytes, H&E.",
    "normal colon mucosa",
    "adenocarcinoma of the lung",
    "squamous cell carcinoma",
    "tumor stroma and necrosis",
] * 20


def build_bpe(path: Path, with_template: bool = True) -> Path:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    if with_template:
        tok.post_processor = processors.TemplateProcessing(
            single="<start_of_text> $A <end_of_text>",
            special_tokens=[("<start_of_text>", 1), ("<end_of_text>", 2)],
        )
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def bpe_file(tmp_path_factory) -> Path:
    return build_bpe(tmp_path_factory.mktemp("bpe") / "bpe.json")


def test_short_text_is_bos_tokens_eos_then_pad(bpe_file):
    raw = Tokenizer.from_file(str(bpe_file)).encode("Lymphocytes, H&E.").ids
    ids = tokenize(["Lymphocytes, H&E."], bpe_file)
    assert ids.shape == (1, 128) and ids.dtype == torch.int64
    row = ids[0].tolist()
    assert row[: len(raw)] == raw and raw[0] == 1 and raw[-1] == 2 and len(raw) > 4
    assert row[len(raw) :] == [0] * (128 - len(raw))


def test_empty_string(bpe_file):
    assert tokenize([""], bpe_file)[0].tolist() == [1, 2] + [0] * 126


def test_long_text_truncated_to_127_and_last_column_is_pad(bpe_file):
    text = " ".join(["carcinoma"] * 300)
    full = Tokenizer.from_file(str(bpe_file)).encode(text).ids
    row = tokenize([text, "tumor"], bpe_file)[0].tolist()
    assert len(full) > 127
    assert row[:126] == full[:126]  # BOS + the first 125 content tokens
    assert row[126] == 2 and row[127] == 0


def test_text_filling_exactly_127_is_not_cut(bpe_file):
    tok = Tokenizer.from_file(str(bpe_file))
    words = ["tumor"] * 125
    while len(tok.encode(" ".join(words)).ids) > 127:
        words.pop()
    text = " ".join(words)
    full = tok.encode(text).ids
    row = tokenize([text], bpe_file)[0].tolist()
    assert row[: len(full)] == full and row[len(full) - 1] == 2


def test_file_without_bos_eos_template_is_rejected(tmp_path):
    bare = build_bpe(tmp_path / "bare.json", with_template=False)
    with pytest.raises(TokenizerError, match="<start_of_text>"):
        tokenize(["tumor"], bare)


def test_missing_file_says_where_to_get_it(tmp_path, monkeypatch):
    with pytest.raises(TokenizerError, match="CONCH_TOKENIZER"):
        tokenize(["tumor"], tmp_path / "absent.json")
    monkeypatch.delenv("CONCH_TOKENIZER", raising=False)
    with pytest.raises(TokenizerError, match="CONCH_TOKENIZER"):
        tokenize(["tumor"])
