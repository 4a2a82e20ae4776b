"""Nyström attention and TransMIL details: pseudo-inverse, approximation, PPEG grid, full-attention option."""

import torch

from slidemil.mil_models import create_mil_model, pad_bags
from slidemil.mil_models.attention import MaskedSelfAttention, newton_schulz_pinv


def test_newton_schulz_matches_the_pseudo_inverse_of_a_softmax_kernel():
    kernel = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(0)).softmax(dim=-1).double()
    torch.testing.assert_close(
        newton_schulz_pinv(kernel, 20), torch.linalg.pinv(kernel), atol=1e-6, rtol=1e-5
    )


def _pair(**kwargs) -> tuple[MaskedSelfAttention, MaskedSelfAttention]:
    torch.manual_seed(0)
    nystrom = MaskedSelfAttention(32, n_heads=2, n_landmarks=16, **kwargs).eval()
    full = MaskedSelfAttention(32, n_heads=2, n_landmarks=None).eval()
    full.load_state_dict(nystrom.state_dict())
    return nystrom, full


def test_nystrom_is_exact_when_every_token_is_a_landmark():
    nystrom, full = _pair(pinv_iterations=25)
    x, mask = torch.randn(1, 12, 32), torch.ones(1, 12, dtype=torch.bool)
    with torch.no_grad():
        (out_n, row_n), (out_f, row_f) = nystrom(x, mask), full(x, mask)
    torch.testing.assert_close(out_n, out_f, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(row_n, row_f, atol=1e-4, rtol=1e-4)


def test_nystrom_approximates_full_attention_with_fewer_landmarks():
    nystrom, full = _pair()
    x, mask = torch.randn(1, 60, 32), torch.ones(1, 60, dtype=torch.bool)  # 4 tokens per landmark
    with torch.no_grad():
        (out_n, row_n), (out_f, row_f) = nystrom(x, mask), full(x, mask)
    assert (out_n - out_f).abs().mean() < 0.1 * out_f.abs().mean()
    assert torch.allclose(row_f.sum(), torch.tensor(1.0)) and (row_n - row_f).abs().max() < 0.01


def test_transmil_full_attention_keeps_padding_invariance():
    torch.manual_seed(0)
    head = create_mil_model("transmil", 8, 2, hidden_dim=16, attention="full").eval()
    bags = [torch.randn(n, 8) for n in (3, 26, 10)]
    x, mask = pad_bags(bags)
    with torch.no_grad():
        single = torch.cat([head(bag.unsqueeze(0))["logits"] for bag in bags])
        torch.testing.assert_close(head(x, mask)["logits"], single, atol=1e-5, rtol=1e-5)


def test_transmil_attention_maps_grid_copies_back_to_instances():
    """A 5-instance bag sits on a 3×3 grid (4 copies of its first instances): attention stays on 5 instances."""
    torch.manual_seed(0)
    head = create_mil_model("transmil", 8, 2, hidden_dim=16, attention="full").eval()
    x, mask = pad_bags([torch.randn(5, 8), torch.randn(12, 8)])
    with torch.no_grad():
        attention = head(x, mask)["attention"]
    assert torch.all(attention[0, 5:] == 0) and torch.all(attention[0, :5] > 0)
