"""create_mil_model / list_mil_models: lookup, option checking, defaults."""

import pytest

from slidemil.core.errors import ParamsError
from slidemil.mil_models import create_mil_model, list_mil_models


def test_list_is_sorted_and_creates_every_head():
    names = list_mil_models()
    assert names == sorted(names)
    for name in names:
        assert create_mil_model(name, 16, 2, hidden_dim=16, dropout=0.0).training


def test_unknown_head_names_the_closest():
    with pytest.raises(KeyError, match="Did you mean 'abmil'"):
        create_mil_model("abmi", 16, 2)


def test_unknown_option_lists_accepted_ones():
    with pytest.raises(ParamsError, match=r"\['hiden_dim'\].*hidden_dim"):
        create_mil_model("abmil", 16, 2, hiden_dim=8)


def test_none_options_fall_back_to_defaults():
    head = create_mil_model("abmil", 16, 2, hidden_dim=None, dropout=None)
    assert head.classifier.in_features == 256


def test_common_options_apply():
    head = create_mil_model("mean_mlp", 16, 4, hidden_dim=12, dropout=0.5)
    assert head.classifier.in_features == 12 and head.classifier.out_features == 4
    assert head.embed[2].p == 0.5


@pytest.mark.parametrize(("in_dim", "n_classes"), [(0, 2), (16, 0)])
def test_bad_sizes_raise(in_dim, n_classes):
    with pytest.raises(ValueError, match="n_classes >= 1"):
        create_mil_model("dsmil", in_dim, n_classes)
