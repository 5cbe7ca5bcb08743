"""Minibatch CKA (Nguyen, Raghu & Kornblith 2021): it uses both linear routes, the Gram sums for small batches and
the feature-space moments for large ones, so it lives apart from either."""
from __future__ import annotations

import itertools

import numpy as np

from ._common import RowChecks, cka_ratio, load64
from ._kernel import linear_gram_sums
from ._moments import _hsic_u_terms, accumulate


def minibatch_cka_value(X, Y, device, *, batch_size: int, rng, dx_dy: tuple[int, int]) -> tuple[float, dict]:
    """Minibatch CKA (Nguyen, Raghu & Kornblith 2021): unbiased HSIC averaged over minibatches,

    .. math::
        \\mathrm{CKA}_{mb} = \\frac{\\frac1k \\sum_b \\mathrm{HSIC}_1(K_b, L_b)}
        {\\sqrt{\\frac1k \\sum_b \\mathrm{HSIC}_1(K_b, K_b) \\cdot \\frac1k \\sum_b \\mathrm{HSIC}_1(L_b, L_b)}}.

    Batches are consecutive rows (so a memory-mapped file is read sequentially) unless ``rng`` is given, which
    shuffles the rows first. ``n // batch_size`` batches of near-equal size, each at least ``batch_size`` rows,
    so no batch is too small for the unbiased estimator.
    """
    n = X.shape[0]
    n_batches = max(1, n // batch_size)
    order = np.arange(n) if rng is None else rng.permutation(n)
    bounds = np.linspace(0, n, n_batches + 1).round().astype(int)
    dx, dy = dx_dy
    sums = np.zeros(3)
    checks = {"X": RowChecks("X"), "Y": RowChecks("Y")}
    for s, e in itertools.pairwise(bounds):
        rows = slice(s, e) if rng is None else order[s:e]
        b = e - s
        zx, zy = load64(X[rows], device), load64(Y[rows], device)
        checks["X"].update(zx, s, e)
        checks["Y"].update(zy, s, e)
        if b * (dx + dy) < dx * dx + dy * dy + dx * dy:  # the Gram route is cheaper for this batch
            zx -= zx.mean(0)
            zy -= zy.mean(0)
            sums += linear_gram_sums(zx, zy, None).hsic_unbiased()
        else:
            sums += _hsic_u_terms(accumulate(zx, zy, device, higher=True))
    checks["X"].finish()
    checks["Y"].finish()
    return cka_ratio(*sums), {"kernel": "linear", "estimator": "unbiased",
                              "n_batches": int(n_batches), "shuffled": rng is not None}
