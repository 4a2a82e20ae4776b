"""CLAM's instance-level clustering loss and the smooth top-1 SVM loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from slidemil.mil_models import create_mil_model
from slidemil.mil_models.clam import smooth_top1_svm_loss


def test_smooth_svm_matches_its_formula():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.5]])
    target = torch.tensor([0, 0])
    expected = (math.log(1 + math.exp(1 + 0 - 2)) + math.log(1 + math.exp(1 + 0.5))) / 2
    assert smooth_top1_svm_loss(logits, target).item() == pytest.approx(expected)


def test_smooth_svm_tends_to_the_hinge_loss():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.5]])
    target = torch.tensor([0, 0])
    hinge = (max(0.0, 1 + 0 - 2) + max(0.0, 1 + 0.5)) / 2
    assert smooth_top1_svm_loss(logits, target, tau=1e-3).item() == pytest.approx(hinge, abs=1e-2)


def _clam(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_mil_model(name, 8, 2, hidden_dim=16, dropout=0.0, **kwargs).eval()


@pytest.mark.parametrize("n", [1, 2, 5, 40])
def test_instance_loss_samples_k_clipped_to_the_bag(n):
    """k = min(k_sample, n // 2) (at least 1): top and bottom instances never overlap; CE loss checked by hand."""
    head = _clam("clam_sb", k_sample=8, instance_loss="ce")
    x = torch.randn(1, n, 8, generator=torch.Generator().manual_seed(n))
    out = head(x, label=torch.tensor([1]))
    h = head.embed(x)[0]
    scores = head.attention(h.unsqueeze(0))[0, 0]
    k = max(1, min(8, n // 2))
    order = scores.argsort(descending=True)
    top, bottom = order[:k], order[n - min(k, n - k) :]
    logits = head.instance_classifiers[1](h[torch.cat([top, bottom])])
    target = torch.cat([torch.ones(k), torch.zeros(len(bottom))]).long()
    assert out["aux_loss"].item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-5)


def test_subtyping_adds_out_of_class_negatives():
    x = torch.randn(2, 10, 8)
    label = torch.tensor([0, 1])
    plain = _clam("clam_mb")(x, label=label)["aux_loss"]
    subtyping = _clam("clam_mb", subtyping=True)(x, label=label)["aux_loss"]
    assert plain.item() != pytest.approx(subtyping.item())


def test_bad_options_raise():
    with pytest.raises(ValueError, match="instance_loss"):
        _clam("clam_sb", instance_loss="hinge")
    with pytest.raises(ValueError, match="k_sample"):
        _clam("clam_sb", k_sample=0)
