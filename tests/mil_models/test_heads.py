"""Registry sweep: every registered MIL head keeps the shared interface and its invariants."""

import pytest
import torch
import torch.nn.functional as F

from slidemil.mil_models import create_mil_model, list_mil_models, pad_bags

IN_DIM, N_CLASSES = 24, 3
ORDER_DEPENDENT = {"transmil"}  # PPEG reads instance order (Shao et al. 2021)
HEADS = list_mil_models()


def _head(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_mil_model(name, IN_DIM, N_CLASSES, hidden_dim=32, **kwargs).eval()


def _bags(sizes: tuple[int, ...], seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, IN_DIM, generator=gen) for n in sizes]


def test_registry_lists_every_head_of_the_interface():
    assert set(HEADS) >= {
        "abmil",
        "abmil_gated",
        "clam_sb",
        "clam_mb",
        "transmil",
        "dsmil",
        "mean_mlp",
        "max_mlp",
    }


@pytest.mark.parametrize("name", HEADS)
def test_output_contract(name):
    x, mask = pad_bags(_bags((7, 3)))
    out = _head(name)(x, mask)
    assert out["logits"].shape == (2, N_CLASSES)
    assert out["attention"].shape in {(2, 7), (2, N_CLASSES, 7)}
    assert out["aux_loss"] is None  # no label given
    assert torch.all(out["attention"][1, ..., 3:] == 0)  # padding gets no attention


@pytest.mark.parametrize("name", HEADS)
def test_padded_batch_equals_bags_one_at_a_time(name):
    torch.set_num_threads(1)
    bags = _bags((9, 1, 30, 17, 4))
    head = _head(name)
    x, mask = pad_bags(bags)
    with torch.no_grad():
        batched = head(x, mask)["logits"]
        single = torch.cat([head(bag.unsqueeze(0), None)["logits"] for bag in bags])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", HEADS)
def test_padding_between_instances_is_ignored(name):
    """Padding need not sit at the end: real instances keep their order, pad rows are interleaved."""
    bags = _bags((5, 12))
    x = torch.full((2, 20, IN_DIM), 7.0)  # pad value far from the data: must not leak
    mask = torch.zeros(2, 20, dtype=torch.bool)
    gen = torch.Generator().manual_seed(3)
    for i, bag in enumerate(bags):
        pos = torch.randperm(20, generator=gen)[: len(bag)].sort().values
        x[i, pos], mask[i, pos] = bag, True
    head = _head(name)
    with torch.no_grad():
        single = torch.cat([head(bag.unsqueeze(0))["logits"] for bag in bags])
        torch.testing.assert_close(head(x, mask)["logits"], single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(set(HEADS) - ORDER_DEPENDENT))
def test_permutation_invariance(name):
    bag = _bags((25,))[0]
    perm = torch.randperm(25, generator=torch.Generator().manual_seed(2))
    head = _head(name)
    with torch.no_grad():
        out, out_perm = head(bag.unsqueeze(0)), head(bag[perm].unsqueeze(0))
    torch.testing.assert_close(out["logits"], out_perm["logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["attention"][..., perm], out_perm["attention"], atol=1e-6, rtol=1e-5)


def test_transmil_depends_on_instance_order():
    bag = _bags((25,))[0]
    head = _head("transmil")
    with torch.no_grad():
        assert not torch.allclose(head(bag.unsqueeze(0))["logits"], head(bag.flip(0).unsqueeze(0))["logits"])


@pytest.mark.parametrize("name", HEADS)
def test_one_instance_bag(name):
    out = _head(name)(_bags((1,))[0].unsqueeze(0), label=torch.tensor([1]))
    assert out["logits"].shape == (1, N_CLASSES) and torch.isfinite(out["logits"]).all()
    assert torch.allclose(out["attention"].sum(-1), torch.ones(())) or name in ORDER_DEPENDENT
    assert out["aux_loss"] is None or torch.isfinite(out["aux_loss"])


@pytest.mark.parametrize("name", HEADS)
def test_empty_bag_raises(name):
    head = _head(name)
    x, mask = pad_bags(_bags((4, 2)))
    mask[1] = False
    with pytest.raises(ValueError, match=r"empty bag.*\[1\]"):
        head(x, mask)
    with pytest.raises(ValueError, match="N == 0"):
        head(torch.zeros(2, 0, IN_DIM), torch.zeros(2, 0, dtype=torch.bool))


@pytest.mark.parametrize("name", HEADS)
def test_bad_input_raises(name):
    head = _head(name)
    with pytest.raises(ValueError, match="in_dim=24"):
        head(torch.zeros(1, 3, IN_DIM + 1))
    with pytest.raises(ValueError, match="mask must be bool"):
        head(torch.zeros(1, 3, IN_DIM), torch.ones(1, 3))


@pytest.mark.parametrize("name", HEADS)
def test_gradients_reach_every_parameter(name):
    head = _head(name).train()
    x, mask = pad_bags(_bags((8, 20, 5)))
    label = torch.tensor([0, 1, 2])
    out = head(x, mask, label=label)
    loss = F.cross_entropy(out["logits"], label)
    if out["aux_loss"] is not None:
        loss = loss + out["aux_loss"]
    loss.backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"{name}: no gradient reaches {missing}"


#: the raw-output sizes of the three task kinds: classes, discrete-time survival bins, one output (Cox, regression)
KIND_OUTPUTS = {"classification": 3, "survival_nll": 4, "cox_or_regression": 1}
#: parameters only the classification auxiliary losses use (no label is given for survival / regression)
CLASS_ONLY = ("instance_classifiers",)


def _kind_loss(kind: str, logits: torch.Tensor) -> torch.Tensor:
    import numpy as np

    from slidemil.pipeline.kinds.objectives import CoxLoss, DiscreteTimeNLL, StandardisedRegression

    y = np.array([[2.0, 1], [5.0, 0], [9.0, 1]])
    if kind == "survival_nll":
        objective = DiscreteTimeNLL(y, 4)
    elif kind == "cox_or_regression":
        return CoxLoss().loss(logits, CoxLoss().target_tensor(y)) + \
            StandardisedRegression(y[:, 0]).loss(logits, StandardisedRegression(y[:, 0]).target_tensor(y[:, 0]))
    else:
        return F.cross_entropy(logits, torch.tensor([0, 1, 2]))
    return objective.loss(logits, objective.target_tensor(y))


@pytest.mark.parametrize("kind", sorted(KIND_OUTPUTS))
@pytest.mark.parametrize("name", HEADS)
def test_every_head_serves_every_task_kind(name, kind):
    """Shape, padding invariance and gradient of each head with the raw-output size of each task kind."""
    torch.set_num_threads(1)
    n_out = KIND_OUTPUTS[kind]
    torch.manual_seed(0)
    head = create_mil_model(name, IN_DIM, n_out, hidden_dim=32).eval()
    bags = _bags((8, 20, 5))
    x, mask = pad_bags(bags)
    with torch.no_grad():
        batched = head(x, mask)["logits"]
        single = torch.cat([head(bag.unsqueeze(0))["logits"] for bag in bags])
    assert batched.shape == (3, n_out)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    head.train()
    loss = _kind_loss(kind, head(x, mask)["logits"])
    loss.backward()
    missing = [n for n, p in head.named_parameters()
               if (p.grad is None or not p.grad.abs().sum() > 0) and not n.startswith(CLASS_ONLY)]
    assert torch.isfinite(loss) and not missing, f"{name}/{kind}: no gradient reaches {missing}"
