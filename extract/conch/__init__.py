"""CONCH v1 (Lu et al., Nature Medicine 2024), written from the specification in docs/conch.md.

``ConchModel`` (encode_image / encode_text), ``tokenize`` (byte-level BPE via ``tokenizers``), checkpoint
loading with strict key checks, and the synthetic test checkpoints of docs/conch.md §6. Bring your own weights:
they are gated and CC BY-NC-ND (https://huggingface.co/MahmoodLab/conch).
"""

from slidemil.extract.conch.checkpoint import CheckpointError, LoadReport, load_conch_model
from slidemil.extract.conch.model import ConchModel
from slidemil.extract.conch.synthetic import state_dict_sha256, synthetic_state_dict
from slidemil.extract.conch.tokenizer import tokenize

__all__ = [
    "CheckpointError",
    "ConchModel",
    "LoadReport",
    "load_conch_model",
    "state_dict_sha256",
    "synthetic_state_dict",
    "tokenize",
]
