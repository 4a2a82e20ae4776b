"""pad_bags: zero padding and mask."""

import pytest
import torch

from slidemil.mil_models import pad_bags


def test_pads_with_zeros_and_masks_real_instances():
    bags = [torch.ones(3, 4), 2 * torch.ones(1, 4)]
    x, mask = pad_bags(bags)
    assert x.shape == (2, 3, 4) and mask.dtype == torch.bool
    assert mask.tolist() == [[True, True, True], [True, False, False]]
    assert torch.equal(x[0], bags[0]) and torch.equal(x[1, 0], bags[1][0])
    assert torch.all(x[1, 1:] == 0)


@pytest.mark.parametrize(
    ("bags", "message"),
    [
        ([], "at least one bag"),
        ([torch.ones(3, 4), torch.ones(2, 5)], "one D"),
        ([torch.ones(3)], r"\[N_i, D\]"),
        ([torch.ones(3, 4), torch.ones(0, 4)], r"empty bag.*\[1\]"),
    ],
)
def test_bad_bags_raise(bags, message):
    with pytest.raises(ValueError, match=message):
        pad_bags(bags)
