r"""Contrastive losses for paired embeddings, with several positives per item.

Both losses score a batch of projected pairs :math:`(u_i, v_j)` (L2-normalised) by :math:`s_{ij} = u_i^\top v_j` and
treat :math:`(i, j)` as positive when ``groups_x[i] == groups_y[j]`` (the plain case: ``i == j``). With several
captions per image, give every row of an image the image id as its group and all its captions are positives.

- :class:`InfoNCELoss` (CLIP; Radford et al. 2021; Maniparambil et al. 2024): symmetric cross-entropy with a learnable
  temperature, clamped so the logit scale never exceeds ``max_logit_scale``.
- :class:`SigLIPLoss` (Zhai et al. 2023; used by SAIL, Zhang et al. 2025): an independent binary decision per pair
  with a learnable scale and bias, no softmax over the batch.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["LOSSES", "InfoNCELoss", "SigLIPLoss", "make_loss", "positive_mask"]


def positive_mask(groups_x: torch.Tensor | None, groups_y: torch.Tensor | None, n: int, device) -> torch.Tensor:
    """Boolean (n, n) mask of positive pairs: equal groups, or the diagonal when groups are None."""
    if groups_x is None:
        return torch.eye(n, dtype=torch.bool, device=device)
    gy = groups_x if groups_y is None else groups_y
    return groups_x[:, None] == gy[None, :]


class InfoNCELoss(nn.Module):
    r"""Symmetric InfoNCE with a learnable, clamped temperature and several positives per item.

    .. math::
        \mathcal L = -\frac{1}{2n}\sum_i \Big[\frac{1}{|P_i|}\sum_{j \in P_i} \log
        \frac{e^{t s_{ij}}}{\sum_k e^{t s_{ik}}} + \frac{1}{|P^\top_i|}\sum_{j \in P^\top_i} \log
        \frac{e^{t s_{ji}}}{\sum_k e^{t s_{ki}}}\Big],
        \qquad t = \min(e^{\tau}, t_{max}),

    with :math:`\tau` learned (initialised to :math:`\log(1/T_0)`). With one positive per row this is CLIP's loss;
    with several it is the supervised-contrastive average over positives (Khosla et al. 2020).

    Parameters
    ----------
    temperature : float
        Initial temperature :math:`T_0` (CLIP: 0.07).
    learn_temperature : bool
        Learn :math:`\tau`; otherwise it stays at its initial value.
    max_logit_scale : float
        Clamp of :math:`t = 1/T` (CLIP: 100).
    """

    def __init__(self, *, temperature: float = 0.07, learn_temperature: bool = True, max_logit_scale: float = 100.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)), requires_grad=learn_temperature)
        self.max_logit_scale = float(max_logit_scale)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=self.max_logit_scale)

    def forward(self, u: torch.Tensor, v: torch.Tensor, groups_x=None, groups_y=None) -> torch.Tensor:
        logits = self.logit_scale * (u @ v.T)
        pos = positive_mask(groups_x, groups_y, u.shape[0], u.device).to(logits.dtype)

        def one_side(lg, p):
            logp = torch.log_softmax(lg, dim=1)
            return -((logp * p).sum(1) / p.sum(1)).mean()

        return 0.5 * (one_side(logits, pos) + one_side(logits.T, pos.T))


class SigLIPLoss(nn.Module):
    r"""Sigmoid loss with a learnable scale and bias (SigLIP), several positives per item.

    .. math::
        \mathcal L = -\frac{1}{n}\sum_{i,j} \log \sigma\big(z_{ij}(t\, s_{ij} + b)\big),
        \qquad z_{ij} = +1 \text{ if } (i,j) \text{ positive else } -1,

    with :math:`t = e^{\tau}` and :math:`b` learned (SigLIP initialises :math:`t = 10`, :math:`b = -10`).
    """

    def __init__(self, *, scale: float = 10.0, bias: float = -10.0, max_logit_scale: float = 100.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))
        self.bias = nn.Parameter(torch.tensor(float(bias)))
        self.max_logit_scale = float(max_logit_scale)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=self.max_logit_scale)

    def forward(self, u: torch.Tensor, v: torch.Tensor, groups_x=None, groups_y=None) -> torch.Tensor:
        logits = self.logit_scale * (u @ v.T) + self.bias
        z = 2.0 * positive_mask(groups_x, groups_y, u.shape[0], u.device).to(logits.dtype) - 1.0
        return -nn.functional.logsigmoid(z * logits).sum() / u.shape[0]


LOSSES = {"infonce": InfoNCELoss, "siglip": SigLIPLoss}


def make_loss(name: str, **params) -> nn.Module:
    """A loss module by name (``"infonce"`` or ``"siglip"``)."""
    from align._validation import check_choice

    return LOSSES[check_choice("loss", name, LOSSES)](**params)
