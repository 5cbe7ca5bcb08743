"""Contrastive losses against naive references; several positives; temperature clamp."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from projectors.losses import InfoNCELoss, SigLIPLoss, make_loss


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(12, 5, generator=g, dtype=torch.float64), dim=1)
    v = torch.nn.functional.normalize(torch.randn(12, 5, generator=g, dtype=torch.float64), dim=1)
    return u, v


def test_infonce_equals_clip_cross_entropy(pair):
    u, v = pair
    loss = InfoNCELoss(temperature=0.1).double()
    logits = 10.0 * u @ v.T
    target = torch.arange(12)
    ref = 0.5 * (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target))
    assert float(loss(u, v).detach()) == pytest.approx(float(ref), rel=1e-6)
    # distinct groups are the same as no groups
    assert float(loss(u, v, torch.arange(12), torch.arange(12)).detach()) == pytest.approx(float(ref), rel=1e-6)


def test_infonce_several_positives(pair):
    u, v = pair
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 5])
    loss = InfoNCELoss(temperature=0.5).double()
    logits = 2.0 * u @ v.T
    pos = (groups[:, None] == groups[None, :]).double()
    ref = 0.0
    for lg, p in ((logits, pos), (logits.T, pos.T)):
        lp = torch.log_softmax(lg, 1)
        ref += -np.mean([float(lp[i][p[i] > 0].mean()) for i in range(12)])
    assert float(loss(u, v, groups, groups).detach()) == pytest.approx(ref / 2, rel=1e-6)
    # Known floor: items of one group share an embedding, other groups are orthogonal; at a large scale each row
    # spreads its probability evenly over its |P| positives, so the loss is the mean of log|P_i|.
    onehot = torch.nn.functional.one_hot(groups, 6).double()
    sizes = torch.bincount(groups)[groups].double()
    sharp = InfoNCELoss(temperature=0.01).double()
    assert float(sharp(onehot, onehot, groups, groups).detach()) == pytest.approx(float(sizes.log().mean()), abs=1e-9)


def test_siglip_equals_naive_sum(pair):
    u, v = pair
    loss = SigLIPLoss(scale=10.0, bias=-10.0).double()
    ref = 0.0
    for i in range(12):
        for j in range(12):
            z = 1.0 if i == j else -1.0
            ref += -math.log(1 / (1 + math.exp(-z * (10.0 * float(u[i] @ v[j]) - 10.0))))
    assert float(loss(u, v).detach()) == pytest.approx(ref / 12, rel=1e-6)


def test_learnable_parameters_get_gradients(pair):
    u, v = pair
    for loss in (InfoNCELoss(), SigLIPLoss()):
        loss = loss.double()
        loss(u, v).backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in loss.parameters())
    frozen = InfoNCELoss(learn_temperature=False)
    assert not frozen.log_scale.requires_grad


def test_temperature_is_clamped():
    loss = InfoNCELoss(temperature=1e-4, max_logit_scale=50.0)
    assert float(loss.logit_scale.detach()) == pytest.approx(50.0)


def test_make_loss_unknown_name():
    assert isinstance(make_loss("siglip"), SigLIPLoss)
    with pytest.raises(ValueError, match="unknown loss 'clip'.*'infonce'"):
        make_loss("clip")
