"""CONCH text tokenization (docs/conch.md §4.2) with the ``tokenizers`` package: ids [B, 128], BOS … EOS, zero-padded.

The tokenizer file (``conch_byte_level_bpe_uncased.json``) is part of CONCH's CC BY-NC-ND material and is
not shipped: pass its path or set ``CONCH_TOKENIZER``. Built on ``tokenizers`` directly because
transformers ≥ 4.48 changes this tokenizer's output (first word loses its prefix space).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch
from tokenizers import Tokenizer

from slidemil.core.errors import SlidemilError

CONTEXT_LENGTH = 128  # ids per text: 127 encoded positions + 1 placeholder pad column
MAX_ENCODED = CONTEXT_LENGTH - 1
BOS, EOS, PAD = "<start_of_text>", "<end_of_text>", "<pad>"


class TokenizerError(SlidemilError):
    """The tokenizer file is missing or is not CONCH's byte-level BPE file."""


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[Tokenizer, int, int, int]:
    if not Path(path).is_file():
        raise TokenizerError(
            f"CONCH tokenizer file {path} does not exist. It ships inside CONCH's code (CC BY-NC-ND, not in "
            "this repo): conch/open_clip_custom/tokenizers/conch_byte_level_bpe_uncased.json, e.g. from "
            "`pip download --no-deps conch-fork`; pass its path or set CONCH_TOKENIZER"
        )
    tok = Tokenizer.from_file(path)
    tok.no_padding()
    tok.no_truncation()
    ids = [tok.token_to_id(t) for t in (BOS, EOS, PAD)]
    if None in ids:
        raise TokenizerError(f"tokenizer file {path} lacks one of the tokens {BOS}, {EOS}, {PAD}")
    return tok, ids[0], ids[1], ids[2]


def tokenize(texts: list[str], tokenizer_file: str | Path | None = None) -> torch.Tensor:
    """Token ids [B, 128] int64 for ``encode_text``: BOS, tokens, EOS, then pad (0) to 128.

    Texts longer than 127 ids keep BOS + the first 125 tokens + EOS; column 127 is always pad; the empty
    string gives [BOS, EOS, 0, …]. ``tokenizer_file`` defaults to env ``CONCH_TOKENIZER``.
    Raises TokenizerError if the file is missing or does not add BOS/EOS itself (not CONCH's file).
    """
    if tokenizer_file is None:
        tokenizer_file = os.environ.get("CONCH_TOKENIZER") or None
    if tokenizer_file is None:
        raise TokenizerError("no CONCH tokenizer file given: pass tokenizer_file or set env CONCH_TOKENIZER")
    tok, bos, eos, pad = _load(str(tokenizer_file))
    out = torch.full((len(texts), CONTEXT_LENGTH), pad, dtype=torch.long)
    for row, encoding in enumerate(tok.encode_batch(list(texts))):
        ids = encoding.ids
        if len(ids) < 2 or ids[0] != bos or ids[-1] != eos:
            raise TokenizerError(
                f"tokenizer file {tokenizer_file} does not wrap texts in {BOS} … {EOS}; "
                "is it CONCH's conch_byte_level_bpe_uncased.json?"
            )
        if len(ids) > MAX_ENCODED:
            ids = ids[: MAX_ENCODED - 1] + [eos]
        out[row, : len(ids)] = torch.tensor(ids)
    return out
