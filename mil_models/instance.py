"""Per-patch (instance) class scores of the MIL heads that have them, for heatmaps.

Attention says where a head looked; instance scores say what each patch looks like to it. Heads with an
instance-level classifier: CLAM (per-class binary instance classifiers, Lu et al., Nat. Biomed. Eng. 2021),
DSMIL (the max-pooling stream's instance classifier, Li et al., CVPR 2021) and the mean/max-pooling MLPs
(their bag classifier applied to each instance embedding: the instance logits of Wang et al., Pattern
Recognit. 2018, "mi-Net"). ABMIL, TransMIL have none (None).
"""

from __future__ import annotations

import torch
from torch import nn

from slidemil.mil_models.clam import CLAM
from slidemil.mil_models.dsmil import DSMIL
from slidemil.mil_models.pooling import PoolingMLP


@torch.no_grad()
def instance_scores(model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """Class scores of each instance of one bag, or None when the head has no instance classifier.

    Args:
        model: a MIL head (eval mode: dropout off); x: the bag's instances ``[N, D]``.

    Returns:
        ``[N, C]`` in [0, 1]: CLAM → for each class c, the probability of its instance classifier that the
        patch is evidence of c (columns do not sum to 1); DSMIL and pooling MLPs → softmax over classes of
        the instance logits.
    """
    if isinstance(model, CLAM):
        h = model.embed(x)  # (N, H)
        return torch.stack([clf(h).softmax(-1)[:, 1] for clf in model.instance_classifiers], dim=1)  # (N, C)
    if isinstance(model, DSMIL):
        return model.instance_classifier(model.embed(x)).softmax(-1)  # (N, C)
    if isinstance(model, PoolingMLP):
        return model.classifier(model.embed(x)).softmax(-1)  # (N, C)
    return None
