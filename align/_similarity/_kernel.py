"""Kernel (Gram-matrix) route of CKA, in row blocks: RBF CKA, and linear CKA when n is smaller than the dimension.

For a block of rows :math:`B` the engine builds :math:`K_{B,:}` and :math:`L_{B,:}` (two ``b × n`` blocks, never an
``n × n`` matrix) and accumulates

.. math::
    \\langle K, L \\rangle_F, \\; \\langle K, K \\rangle_F, \\; \\langle L, L \\rangle_F, \\; K 1, \\; L 1,
    \\; \\operatorname{diag} K, \\; \\operatorname{diag} L,

from which both estimators follow without an ``n × n`` centring matrix:

.. math::
    \\operatorname{tr}(K H L H) = \\langle K, L \\rangle - \\tfrac{2}{n} (K1)^\\top (L1)
        + \\tfrac{1}{n^2} (1^\\top K 1)(1^\\top L 1),

and Song et al.'s (2012) unbiased HSIC with :math:`\\tilde K = K - \\operatorname{diag}(K)`.
Cost :math:`O(n^2 (d_x + d_y))` time, :math:`O(b n)` memory.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._common import iter_chunks, load64, scan
from ._moments import cka_ratio

# Bytes of the two kernel blocks (plus temporaries) held at once.
BLOCK_BYTES = 128 * 2**20


def block_rows(n: int, batch_size: int | None) -> int:
    if batch_size is not None:
        return batch_size
    return int(max(1, min(n, BLOCK_BYTES // (8 * 4 * max(n, 1)))))


@dataclass(frozen=True)
class GramSums:
    n: int
    kl: float
    kk: float
    ll: float
    k1: Any
    l1: Any
    dk: Any
    dl: Any

    def hsic_biased(self) -> tuple[float, float, float]:
        n = self.n
        sk, sl = float(self.k1.sum()), float(self.l1.sum())

        def h(kl, a1, b1, sa, sb):
            return kl - 2.0 / n * float(a1 @ b1) + sa * sb / n**2

        return h(self.kl, self.k1, self.l1, sk, sl), h(self.kk, self.k1, self.k1, sk, sk), \
            h(self.ll, self.l1, self.l1, sl, sl)

    def hsic_unbiased(self) -> tuple[float, float, float]:
        n = self.n
        kt1, lt1 = self.k1 - self.dk, self.l1 - self.dl  # K~ 1, L~ 1
        sk, sl = float(kt1.sum()), float(lt1.sum())

        def h(tr, a1, b1, sa, sb):
            return (tr + sa * sb / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(a1 @ b1)) / (n * (n - 3))

        return (
            h(self.kl - float(self.dk @ self.dl), kt1, lt1, sk, sl),
            h(self.kk - float(self.dk @ self.dk), kt1, kt1, sk, sk),
            h(self.ll - float(self.dl @ self.dl), lt1, lt1, sl, sl),
        )


def gram_sums(kx: Callable, ky: Callable, n: int, device, batch_size: int | None) -> GramSums:
    """Accumulate the sums above from block functions ``kx(start, stop) -> (b, n)`` kernel rows."""
    import torch

    f64 = {"dtype": torch.float64, "device": device}
    k1, l1, dk, dl = (torch.zeros(n, **f64) for _ in range(4))
    kl = kk = ll = 0.0
    for s, e in iter_chunks(n, block_rows(n, batch_size)):
        K = kx(s, e)
        L = ky(s, e)
        kl += float((K * L).sum())
        kk += float((K * K).sum())
        ll += float((L * L).sum())
        k1[s:e] = K.sum(1)
        l1[s:e] = L.sum(1)
        idx = torch.arange(e - s, device=device)
        dk[s:e] = K[idx, idx + s]
        dl[s:e] = L[idx, idx + s]
        del K, L
    return GramSums(n=n, kl=kl, kk=kk, ll=ll, k1=k1, l1=l1, dk=dk, dl=dl)


def linear_block(Z):
    """Kernel rows of the linear kernel on the centred rows ``Z``."""
    return lambda s, e: Z[s:e] @ Z.T


def rbf_block(Z, sq, sigma: float):
    """Kernel rows of :math:`\\exp(-\\|z_i - z_j\\|^2 / (2 \\sigma^2))`; ``sq`` holds the squared row norms."""
    import torch

    def block(s, e):
        d2 = sq_dist_block(Z, sq, s, e)
        return torch.exp_(d2.mul_(-1.0 / (2.0 * sigma * sigma)))

    return block


def sq_dist_block(Z, sq, s, e):
    """Squared distances of rows ``s:e`` to all rows, clamped at 0, with an exact zero diagonal."""
    import torch

    d2 = sq[s:e, None] + sq[None, :] - 2.0 * (Z[s:e] @ Z.T)
    d2.clamp_(min=0.0)
    idx = torch.arange(e - s, device=Z.device)
    d2[idx, idx + s] = 0.0
    return d2


def centred(X, device, batch_size):
    Z = load64(X, device, batch_size)
    Z -= Z.mean(0)
    return Z


def cka_from_gram(g: GramSums, unbiased: bool) -> float:
    h = g.hsic_unbiased() if unbiased else g.hsic_biased()
    return cka_ratio(*h)


# --------------------------------------------------------------------------------------------------------------
# Bandwidth: the median heuristic over all pairs, exactly, in bounded memory.
# --------------------------------------------------------------------------------------------------------------


def median_sq_distance(Z, sq, *, batch_size: int | None, cap: int = 4_000_000, bins: int = 4096) -> float:
    """``np.median`` of the full ``n × n`` squared-distance matrix, diagonal zeros included (Kornblith et al.'s
    convention: ``sigma = sqrt(median)``), found exactly without holding the matrix.

    The n zeros of the diagonal come first in sorted order and every off-diagonal value appears twice, so the
    full-matrix order statistic at position p is 0 for p < n and else the off-diagonal one of rank (p - n) // 2;
    those are found by histogram refinement over row blocks (each pass costs half a sweep of distances: the upper
    triangle only; one pass when n (n - 1) / 2 <= cap, typically two otherwise).
    """
    n = Z.shape[0]
    total = n * n
    positions = [total // 2] if total % 2 else [total // 2 - 1, total // 2]
    ranks = [(p - n) // 2 for p in positions if p >= n]
    found = offdiag_order_statistics(Z, sq, ranks, batch_size=batch_size, cap=cap, bins=bins) if ranks else []
    values = [0.0 if p < n else found[ranks.index((p - n) // 2)] for p in positions]
    return float(np.mean(values))


def offdiag_order_statistic(Z, sq, rank: int, *, batch_size: int | None, cap: int, bins: int) -> float:
    """The value of 0-based ``rank`` among the ``n (n - 1) / 2`` squared distances of distinct pairs."""
    return offdiag_order_statistics(Z, sq, [rank], batch_size=batch_size, cap=cap, bins=bins)[0]


def offdiag_order_statistics(Z, sq, ranks, *, batch_size: int | None, cap: int, bins: int) -> list[float]:
    """Several order statistics of the distinct-pair squared distances; ranks whose search interval coincides
    (neighbouring ranks, as for an even-count median) share every pass."""
    import torch

    n = Z.shape[0]
    device = Z.device
    rows = block_rows(n, batch_size)
    hi0 = 4.0 * float(sq.max()) * (1 + 1e-9) + 1e-300  # |z_i - z_j|^2 <= 4 max |z|^2 (Z is centred)
    pending = {r: (0.0, hi0, r, n * (n - 1) // 2) for r in set(ranks)}  # rank -> (lo, hi, rank in [lo, hi), count)
    out: dict[int, float] = {}
    while pending:
        lo, hi, _, count = next(iter(pending.values()))
        group = [r for r, st in pending.items() if st[:2] == (lo, hi)]
        collect = count <= cap
        edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64, device=device)
        hist = torch.zeros(bins, dtype=torch.float64, device=device)
        kept, vmin, vmax = [], math.inf, -math.inf
        for s, e in iter_chunks(n, rows):
            # only columns j >= s: the upper triangle, half the work of full rows
            d2 = (sq[s:e, None] + sq[None, s:] - 2.0 * (Z[s:e] @ Z[s:].T)).clamp_(min=0.0)
            i = torch.arange(s, e, device=device)[:, None]
            j = torch.arange(s, n, device=device)[None, :]
            v = d2[(j > i) & (d2 >= lo) & (d2 < hi)]
            if v.numel() == 0:
                continue
            vmin, vmax = min(vmin, float(v.min())), max(vmax, float(v.max()))
            if collect:
                kept.append(v)
            else:
                b = (torch.bucketize(v, edges, right=True) - 1).clamp_(0, bins - 1)
                hist += torch.bincount(b, minlength=bins).to(torch.float64)
        if collect and vmin != vmax:
            ordered = torch.sort(torch.cat(kept)).values
        cum = torch.cumsum(hist, 0)
        for r in group:
            local = pending.pop(r)[2]
            if vmin == vmax:  # every value in the interval is the same
                out[r] = vmin
            elif collect:
                out[r] = float(ordered[local])
            else:
                b = int(torch.searchsorted(cum, torch.tensor(float(local), dtype=torch.float64, device=device),
                                           right=True))
                below = int(cum[b - 1]) if b > 0 else 0
                pending[r] = (float(edges[b]), float(edges[b + 1]), local - below, int(hist[b]))
    return [out[r] for r in ranks]


def resolve_sigma(sigma: Any, Z, sq, *, median_scale: float, batch_size, name: str) -> tuple[float, str]:
    """The bandwidth actually used and the rule that gave it."""
    if sigma == "median":
        med = median_sq_distance(Z, sq, batch_size=batch_size)
        if med <= 0:
            raise ValueError(
                f"the median squared distance between rows of `{name}` is 0 (more than half of the pairs are "
                "duplicates), so the median bandwidth is 0; pass an explicit `sigma`"
            )
        return median_scale * math.sqrt(med), "median"
    if sigma == "platonic":
        return 1.0, "platonic"
    return float(sigma), "fixed"


def rbf_cka_value(X, Y, device, *, sigma, median_scale, unbiased, batch_size) -> tuple[float, dict]:
    scan(X, "X", device, batch_size)
    scan(Y, "Y", device, batch_size)
    Zx = centred(X, device, batch_size)
    Zy = centred(Y, device, batch_size)
    sqx, sqy = (Zx * Zx).sum(1), (Zy * Zy).sum(1)
    sig_x, rule = resolve_sigma(sigma, Zx, sqx, median_scale=median_scale, batch_size=batch_size, name="X")
    sig_y, _ = resolve_sigma(sigma, Zy, sqy, median_scale=median_scale, batch_size=batch_size, name="Y")
    g = gram_sums(rbf_block(Zx, sqx, sig_x), rbf_block(Zy, sqy, sig_y), Zx.shape[0], device, batch_size)
    settings = {
        "kernel": "rbf", "estimator": "unbiased" if unbiased else "biased", "bandwidth": rule,
        "sigma_x": sig_x, "sigma_y": sig_y,
    }
    if rule == "median":
        settings["median_scale"] = median_scale
    return cka_from_gram(g, unbiased), settings


def linear_gram_value(X, Y, device, *, unbiased: bool, batch_size) -> tuple[float, dict]:
    scan(X, "X", device, batch_size)
    scan(Y, "Y", device, batch_size)
    Zx = centred(X, device, batch_size)
    Zy = centred(Y, device, batch_size)
    g = gram_sums(linear_block(Zx), linear_block(Zy), Zx.shape[0], device, batch_size)
    return cka_from_gram(g, unbiased), {
        "kernel": "linear", "estimator": "unbiased" if unbiased else "biased", "route": "gram"}
