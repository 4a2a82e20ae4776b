"""The trainer's hyper-parameters, declared once: :class:`TrainConfig` is both the argument of
:func:`slidemil.pipeline.trainer.train_fold` and the base of the ``train:`` params section.

Kept apart from the trainer so that reading params (the CLI, ``--help``) does not import torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictBool

from slidemil.core.params import Section

DEVICE_PATTERN = r"^(cpu|cuda(:\d+)?)$"


class TrainConfig(Section):
    """Hyper-parameters of :func:`train_fold`: the training keys of the ``train:`` params section.

    ``stages/train.py``'s ``TrainSection`` extends this model with the stage's I/O keys, so each key and
    its default are declared once. The warm-up epochs are never chosen as the best epoch unless training
    ends within them; ``bag_weight`` follows CLAM (Lu et al., Nat. Biomed. Eng. 2021).

    Raises:
        pydantic.ValidationError (a ValueError): a value out of range or not one of the choices.
    """

    epochs: int = Field(20, ge=1, description="maximum training epochs per fold")
    lr: float = Field(2e-4, ge=0, description="AdamW peak learning rate")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    warmup_epochs: int = Field(1, ge=0, description="linear warm-up epochs, then cosine decay to 0")
    batch_size: int = Field(4, ge=1, description="bags per padded mini-batch")
    bucket_batches: int = Field(50, ge=0, description="mini-batches formed from windows of bucket_batches × "
                                "batch_size bags sorted by length (less padding); 0: random batches")
    max_instances: int = Field(4096, ge=0, description="random patches per bag in training (0: all); validation "
                               "and test see whole bags")
    patience: int = Field(5, ge=0, description="epochs without improvement of `monitor` (counted after the "
                          "warm-up) before stopping; 0: never stop early")
    monitor: Literal["val/auroc", "val/loss"] = Field("val/auroc", description="validation metric choosing the "
                                                      "best epoch, whose weights are restored")
    class_balance: Literal["weights", "sampler", "none"] = Field(
        "weights", description="weights: inverse-frequency loss weights; sampler: class-balanced sampling; none")
    grad_clip: float = Field(1.0, ge=0, description="max gradient norm (0: off)")
    seed: int = Field(0, description="seed of weights, sampling and instance caps (a CPU run repeats exactly)")
    bag_weight: float = Field(0.7, ge=0, le=1, description="weight of the bag loss against a head's auxiliary "
                              "loss (CLAM's instance clustering)")
    device: str = Field("cpu", pattern=DEVICE_PATTERN, description="torch device: cpu | cuda | cuda:<i>")
    amp: StrictBool = Field(True, description="bf16 autocast on CUDA")
