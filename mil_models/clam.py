"""CLAM-SB and CLAM-MB with the instance-level clustering loss (Lu et al., Nat. Biomed. Eng. 2021).

Written from the paper; CLAM's own code is GPL-3 and is not used.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from slidemil.mil_models._registry import MIL_MODELS
from slidemil.mil_models.layers import AttentionNet, check_bags, instance_embedding, masked_softmax


def smooth_top1_svm_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 1.0, tau: float = 1.0
) -> torch.Tensor:
    """Smooth top-1 multi-class SVM loss (Berrada, Zisserman & Kumar, ICLR 2018), mean over rows.

    ``tau * logsumexp_j((alpha * [j != y] + s_j - s_y) / tau)``; ``logits [M, K]``, ``target [M]`` long.
    Written here because the ``topk`` package that CLAM uses is unmaintained.
    """
    margin = alpha * (1.0 - F.one_hot(target, logits.shape[1]).to(logits.dtype))  # (M, K)
    true_score = logits.gather(1, target.unsqueeze(1))  # (M, 1)
    return (tau * torch.logsumexp((margin + logits - true_score) / tau, dim=1)).mean()


class CLAM(nn.Module):
    """Clustering-constrained attention MIL, single branch (SB) or one attention branch per class (MB).

    Gated attention pooling (as ABMIL) gives the bag logits; per class an instance classifier learns to tell
    the ``k`` most attended instances (pseudo-label positive) from the ``k`` least attended (negative) of bags
    of that class; with ``subtyping`` the most attended instances of bags of other classes are negatives for
    that class too. ``k = min(k_sample, n // 2)`` (at least 1) so top and bottom sets never overlap in small
    bags. The instance loss (smooth top-1 SVM or cross-entropy) is returned as ``aux_loss`` when ``label`` is
    given; weighting it against the bag loss is the trainer's job.

    Input ``x [B, N, D]``, ``mask [B, N]`` bool, ``label [B]`` long or None → ``logits [B, C]``,
    ``attention`` softmax weights ``[B, N]`` (SB) or ``[B, C, N]`` (MB), 0 on padding. Permutation invariant.
    Lu et al., "Data-efficient and weakly supervised computational pathology on whole-slide images",
    Nat. Biomed. Eng. 2021.
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden_dim: int = 512,
        attn_dim: int = 256,
        dropout: float = 0.25,
        multi_branch: bool = False,
        k_sample: int = 8,
        instance_loss: str = "svm",
        subtyping: bool = False,
    ):
        super().__init__()
        if instance_loss not in ("svm", "ce"):
            raise ValueError(f"instance_loss must be 'svm' or 'ce', got {instance_loss!r}")
        if k_sample < 1:
            raise ValueError(f"k_sample must be >= 1, got {k_sample}")
        self.in_dim = in_dim
        self.n_classes = n_classes
        self.multi_branch = multi_branch
        self.k_sample = k_sample
        self.subtyping = subtyping
        self.instance_loss_fn = smooth_top1_svm_loss if instance_loss == "svm" else F.cross_entropy
        self.embed = instance_embedding(in_dim, hidden_dim, dropout)
        n_branches = n_classes if multi_branch else 1
        self.attention = AttentionNet(hidden_dim, attn_dim, n_out=n_branches, gated=True, dropout=dropout)
        self.bag_classifiers = nn.ModuleList(
            nn.Linear(hidden_dim, 1 if multi_branch else n_classes) for _ in range(n_branches)
        )
        self.instance_classifiers = nn.ModuleList(nn.Linear(hidden_dim, 2) for _ in range(n_classes))

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, label: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor | None]:
        mask = check_bags(x, mask, self.in_dim)
        h = self.embed(x)  # (B, N, H)
        scores = self.attention(h)  # (B, K, N), K = C (MB) or 1 (SB)
        a = masked_softmax(scores, mask.unsqueeze(1))  # (B, K, N)
        z = torch.einsum("bkn,bnh->bkh", a, h)  # (B, K, H)
        logits = torch.cat([clf(z[:, i]) for i, clf in enumerate(self.bag_classifiers)], dim=1)  # (B, C)
        aux_loss = None if label is None else self._instance_loss(h, scores, mask, label)
        attention = a if self.multi_branch else a.squeeze(1)
        return {"logits": logits, "attention": attention, "aux_loss": aux_loss}

    def _instance_loss(
        self, h: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, label: torch.Tensor
    ) -> torch.Tensor:
        """Mean clustering loss over (bag, class) pairs; ``h [B, N, H]``, ``scores [B, K, N]``, ``label [B]``."""
        losses = []
        for b, y in enumerate(label.tolist()):
            hb = h[b][mask[b]]  # (n, H)
            n = hb.shape[0]
            k = max(1, min(self.k_sample, n // 2))
            for c, classifier in enumerate(self.instance_classifiers):
                if c != y and not self.subtyping:
                    continue
                sb = scores[b, c if self.multi_branch else 0][mask[b]]  # (n,)
                top = sb.topk(k).indices
                if c == y:
                    bottom = (-sb).topk(min(k, n - k)).indices
                    idx = torch.cat([top, bottom])
                    target = torch.cat([torch.ones_like(top), torch.zeros_like(bottom)])
                else:
                    idx, target = top, torch.zeros_like(top)
                losses.append(self.instance_loss_fn(classifier(hb[idx]), target))
        return torch.stack(losses).mean()


MIL_MODELS.register("clam_sb")(partial(CLAM, multi_branch=False))
MIL_MODELS.register("clam_mb")(partial(CLAM, multi_branch=True))
