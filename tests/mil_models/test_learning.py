"""Planted-signal learning: every head learns bags whose positives hold a few shifted witness instances."""

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from slidemil.mil_models import create_mil_model, list_mil_models, pad_bags
from slidemil.mil_models.synthetic import PlantedBags, planted_signal_bags

N_TRAIN, N_TEST, EPOCHS, BATCH = 100, 60, 5, 10
BAG_WEIGHT = 0.7  # CLAM's default mix of bag loss and instance (aux) loss


@pytest.fixture(scope="module")
def planted() -> PlantedBags:
    return planted_signal_bags(
        N_TRAIN + N_TEST, dim=512, n_instances=(20, 50), n_witnesses=(3, 6), shift=8.0, seed=0
    )


def _train(name: str, data: PlantedBags) -> torch.nn.Module:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    head = create_mil_model(name, 512, 2, hidden_dim=64)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(EPOCHS):
        head.train()
        order = torch.randperm(N_TRAIN, generator=gen).tolist()
        for start in range(0, N_TRAIN, BATCH):
            idx = order[start : start + BATCH]
            x, mask = pad_bags([data.bags[i] for i in idx])
            label = data.labels[idx]
            out = head(x, mask, label=label)
            loss = F.cross_entropy(out["logits"], label)
            if out["aux_loss"] is not None:
                loss = BAG_WEIGHT * loss + (1 - BAG_WEIGHT) * out["aux_loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return head.eval()


@pytest.mark.parametrize("name", list_mil_models())
def test_head_learns_planted_signal(name, planted):
    head = _train(name, planted)
    test = list(range(N_TRAIN, N_TRAIN + N_TEST))
    x, mask = pad_bags([planted.bags[i] for i in test])
    with torch.no_grad():
        out = head(x, mask)
    proba = out["logits"].softmax(dim=1)[:, 1]
    assert roc_auc_score(planted.labels[test].numpy(), proba.numpy()) >= 0.95
    if name == "abmil":  # attention ranks the witnesses of positive bags above the other instances
        flags, scores = [], []
        for row, i in enumerate(test):
            if planted.labels[i]:
                n = len(planted.bags[i])
                flags.append(planted.witnesses[i])
                scores.append(out["attention"][row, :n])
        assert roc_auc_score(torch.cat(flags).numpy(), torch.cat(scores).numpy()) >= 0.9
