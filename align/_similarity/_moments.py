"""Measures computed from streamed second moments: linear CKA (biased and unbiased), SVCCA, PWCCA, Procrustes.

One pass over the rows accumulates, in float64, the shifted moments

.. math::
    s_x = \\sum_i x_i', \\quad S_{xx} = \\sum_i x_i' x_i'^\\top, \\quad S_{xy} = \\sum_i x_i' y_i'^\\top,
    \\quad x_i' = x_i - c_x,

with the shift :math:`c_x` the mean of the first chunk (so that the centring correction
:math:`C_{xy} = S_{xy} - s_x s_y^\\top / n` never cancels catastrophically), and, for the unbiased estimator, the
fourth-order sums :math:`\\sum_i \\|x_i'\\|^2 x_i'` etc. Cost :math:`O(n (d_x^2 + d_y^2 + d_x d_y))`, memory
:math:`O((d_x + d_y)^2)`: independent of n, so a memory-mapped array of any length streams through.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ._common import (
    RowChecks,
    constant_error,
    iter_chunks,
    ops_for,
    rows_per_chunk,
)


@dataclass(frozen=True)
class Moments:
    """Shifted float64 moments of paired rows (torch tensors on the compute device)."""

    n: int
    shift_x: Any
    shift_y: Any
    sx: Any
    sy: Any
    sxx: Any
    syy: Any
    sxy: Any
    # Fourth-order sums for the unbiased HSIC (None when not requested); a = |x'|^2, b = |y'|^2.
    sa: Any = None
    sb: Any = None
    saa: Any = None
    sbb: Any = None
    sab: Any = None
    qx: Any = None  # sum_i a_i x'_i
    qy: Any = None  # sum_i b_i y'_i
    ux: Any = None  # sum_i b_i x'_i   (cross)
    uy: Any = None  # sum_i a_i y'_i   (cross)
    constant_x: bool = False
    constant_y: bool = False

    # centred second moments ------------------------------------------------------------------------------------
    @property
    def cxx(self):
        return self.sxx - self.sx[:, None] * self.sx[None, :] / self.n

    @property
    def cyy(self):
        return self.syy - self.sy[:, None] * self.sy[None, :] / self.n

    @property
    def cxy(self):
        return self.sxy - self.sx[:, None] * self.sy[None, :] / self.n


def accumulate(
    X: Any,
    Y: Any,
    device,
    *,
    batch_size: int | None = None,
    higher: bool = False,
    perm: np.ndarray | None = None,
    base: Moments | None = None,
) -> Moments:
    """Stream the rows of ``X`` and ``Y`` once and return their :class:`Moments`.

    With ``perm`` and ``base`` only the cross terms are recomputed for ``Y[perm]`` (a permutation-null draw): the
    self terms of ``base`` do not change under a permutation of the rows of ``Y``.

    On CPU the products run in numpy on float64 views (``x'.T @ x'`` is a BLAS ``syrk``: half the multiply-adds of
    a general product); elsewhere in torch. The same pass checks each chunk for NaN / inf and records whether every
    row is the same (:class:`~._common.RowChecks`).
    """
    ops = ops_for(device)
    n, dx = X.shape
    dy = Y.shape[1]
    rows = rows_per_chunk(dx + dy, batch_size, copies=2)
    cross_only = base is not None
    if cross_only:
        cx, cy = ops.wrap(base.shift_x), ops.wrap(base.shift_y)
    else:
        cx = cy = None
        checks = RowChecks("X"), RowChecks("Y")
        sx, sy = ops.zeros(dx), ops.zeros(dy)
        sxx, syy = ops.zeros((dx, dx)), ops.zeros((dy, dy))
        if higher:
            sa = sb = saa = sbb = 0.0
            qx, qy = ops.zeros(dx), ops.zeros(dy)
    sxy = ops.zeros((dx, dy))
    if higher:
        sab = 0.0
        ux, uy = ops.zeros(dx), ops.zeros(dy)

    for s, e in iter_chunks(n, rows):
        xb = ops.chunk(X, s, e)
        yb = ops.chunk(Y, s, e) if perm is None else ops.take(Y, perm[s:e])
        if not cross_only:
            checks[0].update(xb, s, e)
            checks[1].update(yb, s, e)
        if cx is None:
            cx, cy = xb.mean(0, dtype=ops.f64), yb.mean(0, dtype=ops.f64)
        if ops.is_numpy and not cross_only:
            # both centred chunks side by side in one float64 buffer W = [x' y']: one syrk W'W gives X'X, Y'Y and
            # X'Y at once (a larger, faster BLAS call than three)
            W = np.empty((e - s, dx + dy))
            np.subtract(xb, cx, out=W[:, :dx])
            np.subtract(yb, cy, out=W[:, dx:])
            xb, yb = W[:, :dx], W[:, dx:]
            G = W.T @ W
            sxx += G[:dx, :dx]
            syy += G[dx:, dx:]
            sxy += G[:dx, dx:]
            col = W.sum(0)
            sx += col[:dx]
            sy += col[dx:]
        else:
            xb = xb - cx  # float64 (promoted), centred
            yb = yb - cy
            sxy += xb.T @ yb
            if not cross_only:
                sx += xb.sum(0)
                sy += yb.sum(0)
                sxx += xb.T @ xb
                syy += yb.T @ yb
        if higher:
            a = (xb * xb).sum(1)
            b = (yb * yb).sum(1)
            sab += float((a * b).sum())
            ux += xb.T @ b
            uy += yb.T @ a
            if not cross_only:
                sa += float(a.sum())
                sb += float(b.sum())
                saa += float((a * a).sum())
                sbb += float((b * b).sum())
                qx += xb.T @ a
                qy += yb.T @ b

    if not cross_only:
        checks[0].finish(allow_constant=True)  # constancy is reported by the metric that needs it
        checks[1].finish(allow_constant=True)
    t = ops.tensor  # the Moments hold torch tensors (zero-copy from numpy)
    if cross_only:
        extra = {"sab": sab, "ux": t(ux), "uy": t(uy)} if higher else {}
        return replace(base, sxy=t(sxy), **extra)
    extra = ({"sa": sa, "sb": sb, "saa": saa, "sbb": sbb, "sab": sab, "qx": t(qx), "qy": t(qy), "ux": t(ux),
              "uy": t(uy)} if higher else {})
    return Moments(
        n=n, shift_x=t(cx), shift_y=t(cy), sx=t(sx), sy=t(sy), sxx=t(sxx), syy=t(syy), sxy=t(sxy),
        constant_x=checks[0].constant, constant_y=checks[1].constant, **extra,
    )


def _check_not_constant(m: Moments) -> None:
    if m.constant_x:
        raise constant_error("X")
    if m.constant_y:
        raise constant_error("Y")


# --------------------------------------------------------------------------------------------------------------
# Values from moments. Each returns (value, settings).
# --------------------------------------------------------------------------------------------------------------


def linear_cka_from_moments(m: Moments) -> tuple[float, dict]:
    """:math:`\\|C_{xy}\\|_F^2 / (\\|C_{xx}\\|_F \\|C_{yy}\\|_F)` (Kornblith et al. 2019, eq. for linear CKA)."""
    _check_not_constant(m)
    num = float((m.cxy ** 2).sum())
    den = math.sqrt(float((m.cxx ** 2).sum()) * float((m.cyy ** 2).sum()))
    return num / den, {"kernel": "linear", "estimator": "biased", "route": "features"}


def _hsic_u_terms(m: Moments):
    """Unbiased HSIC (Song et al. 2012, eq. 5) for K = X'X'^T, L = Y'Y'^T, from moments (translation-invariant)."""
    n = m.n
    sx, sy = m.sx, m.sy

    def hsic(tr_kl, one_k_one, one_l_one, one_kl_one):
        return (tr_kl + one_k_one * one_l_one / ((n - 1) * (n - 2)) - 2.0 * one_kl_one / (n - 2)) / (n * (n - 3))

    k1 = float(sx @ sx - m.sa)  # 1' K~ 1
    l1 = float(sy @ sy - m.sb)
    tr_kl = float((m.sxy ** 2).sum() - m.sab)
    kl = float(sx @ m.sxy @ sy - sx @ m.ux - m.uy @ sy + m.sab)
    tr_kk = float((m.sxx ** 2).sum() - m.saa)
    kk = float(sx @ m.sxx @ sx - 2.0 * (sx @ m.qx) + m.saa)
    tr_ll = float((m.syy ** 2).sum() - m.sbb)
    ll = float(sy @ m.syy @ sy - 2.0 * (sy @ m.qy) + m.sbb)
    return hsic(tr_kl, k1, l1, kl), hsic(tr_kk, k1, k1, kk), hsic(tr_ll, l1, l1, ll)


def unbiased_cka_from_moments(m: Moments) -> tuple[float, dict]:
    _check_not_constant(m)
    h_xy, h_xx, h_yy = _hsic_u_terms(m)
    return cka_ratio(h_xy, h_xx, h_yy), {"kernel": "linear", "estimator": "unbiased", "route": "features"}


def cka_ratio(h_xy: float, h_xx: float, h_yy: float) -> float:
    """HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)); a non-positive self term (possible for the unbiased estimator on
    tiny samples) is an error, not a NaN."""
    if not (h_xx > 0 and h_yy > 0):
        raise ValueError(
            "the HSIC of a representation with itself is not positive "
            f"(HSIC(X, X) = {h_xx:.3g}, HSIC(Y, Y) = {h_yy:.3g}); CKA is undefined here. This happens for the "
            "unbiased estimator on very few items: use more rows or the biased estimator (linear_cka)"
        )
    return h_xy / math.sqrt(h_xx * h_yy)


def _whitener(c, *, variance: float | None, n_components: int | None, rtol: float, name: str):
    """Eigen-basis of a covariance kept for CCA: columns ``T`` with :math:`T^\\top C T = I_k`."""
    import torch

    evals, evecs = torch.linalg.eigh(c)
    evals, evecs = evals.flip(0), evecs.flip(1)  # descending
    top = float(evals[0])
    if top <= 0:
        raise constant_error(name)
    rank = int((evals > rtol * top).sum())
    if n_components is not None:
        if n_components > rank:
            raise ValueError(
                f"`n_components` must be <= the rank of `{name}` ({rank}), got {n_components}"
            )
        k = n_components
    elif variance is not None:
        frac = torch.cumsum(evals.clamp(min=0), 0) / evals.clamp(min=0).sum()
        k = int((frac < variance - 1e-12).sum()) + 1
        k = min(k, rank)
    else:
        k = rank
    return evecs[:, :k] / evals[:k].sqrt()[None, :], k, rank


def _cca(m: Moments, *, variance, n_components, rtol):
    import torch

    tx, kx, rx = _whitener(m.cxx, variance=variance, n_components=n_components, rtol=rtol, name="X")
    ty, ky, ry = _whitener(m.cyy, variance=variance, n_components=n_components, rtol=rtol, name="Y")
    if max(kx, ky) >= m.n - 1:
        raise ValueError(
            f"CCA needs more items than kept dimensions: n = {m.n} but X keeps {kx} and Y keeps {ky}; with "
            "n <= dimensions every canonical correlation is 1. Use more items or fewer components "
            "(`variance` / `n_components`)"
        )
    u, rho, vh = torch.linalg.svd(tx.T @ m.cxy @ ty, full_matrices=False)
    return tx, ty, u, rho.clamp(0.0, 1.0), vh, kx, ky, rx, ry


def svcca_from_moments(m: Moments, *, variance: float = 0.99, n_components: int | None = None,
                       rtol: float = 1e-10) -> tuple[float, dict]:
    """Mean canonical correlation after keeping the top principal directions (Raghu et al. 2017)."""
    _check_not_constant(m)
    *_, rho, _, kx, ky, _, _ = _cca(m, variance=None if n_components else variance, n_components=n_components,
                                    rtol=rtol)
    return float(rho.mean()), {
        "variance": None if n_components else variance, "n_components": n_components,
        "kept_x": kx, "kept_y": ky, "n_correlations": int(rho.numel()),
    }


def pwcca_from_moments(m: Moments, *, rtol: float = 1e-10) -> tuple[float, dict]:
    """Projection-weighted CCA (Morcos et al. 2018) from moments."""
    _check_not_constant(m)
    tx, ty, u, rho, vh, kx, ky, _, _ = _cca(m, variance=None, n_components=None, rtol=rtol)
    r = rho.numel()
    if kx <= ky:  # Morcos et al. weight the side with fewer (non-degenerate) dimensions; X on a tie
        side, coef, cov = "X", tx @ u[:, :r], m.cxx
    else:
        side, coef, cov = "Y", ty @ vh.T[:, :r], m.cyy
    # Canonical variate h_i = X_c a_i has unit norm (a_i' C a_i = 1), so <h_i, column j of X_c> = (C a_i)_j.
    alpha = (cov @ coef).abs().sum(0)
    value = float((alpha * rho).sum() / alpha.sum())
    return value, {"weighted_side": side, "rank_x": kx, "rank_y": ky, "n_correlations": int(r)}


def procrustes_from_moments(m: Moments, *, form: str = "angular") -> tuple[float, dict]:
    """Orthogonal Procrustes shape distance (Williams et al. 2021; Ding et al. 2021) from moments."""
    import torch

    _check_not_constant(m)
    nuc = float(torch.linalg.svdvals(m.cxy).sum())
    nx, ny = float(torch.trace(m.cxx)), float(torch.trace(m.cyy))
    return procrustes_value(nuc / math.sqrt(nx * ny), form), {"form": form, "route": "features"}


def procrustes_value(cos: float, form: str) -> float:
    cos = min(1.0, max(0.0, cos))
    if form == "angular":
        return math.acos(cos)
    return math.sqrt(max(0.0, 2.0 - 2.0 * cos))


def minibatch_cka_value(X, Y, device, *, batch_size: int, rng, dx_dy: tuple[int, int]) -> tuple[float, dict]:
    """Minibatch CKA (Nguyen, Raghu & Kornblith 2021): unbiased HSIC averaged over minibatches,

    .. math::
        \\mathrm{CKA}_{mb} = \\frac{\\frac1k \\sum_b \\mathrm{HSIC}_1(K_b, L_b)}
        {\\sqrt{\\frac1k \\sum_b \\mathrm{HSIC}_1(K_b, K_b) \\cdot \\frac1k \\sum_b \\mathrm{HSIC}_1(L_b, L_b)}}.

    Batches are consecutive rows (so a memory-mapped file is read sequentially) unless ``rng`` is given, which
    shuffles the rows first. ``n // batch_size`` batches of near-equal size, each at least ``batch_size`` rows,
    so no batch is too small for the unbiased estimator.
    """
    from ._common import load64
    from ._kernel import linear_gram_sums

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
