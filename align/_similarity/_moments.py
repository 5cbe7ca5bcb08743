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

import math
import sys
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ._common import (
    RowChecks,
    _from_numpy as from_numpy,
    cka_ratio,
    constant_error,
    iter_chunks,
    ops_for,
    rows_per_chunk,
    scale_bounded,
)

# Rows whose mean is the shift c of the moments (see the module docstring): the first SHIFT_ROWS of the first chunk.
SHIFT_ROWS = 256


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
    if ops.is_numpy and not cross_only:
        return _accumulate_numpy(X, Y, ops, rows, higher)
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
    t = ops.tensor  # numpy arrays on CPU, torch tensors elsewhere
    if cross_only:
        extra = {"sab": sab, "ux": t(ux), "uy": t(uy)} if higher else {}
        return replace(base, sxy=t(sxy), **extra)
    extra = ({"sa": sa, "sb": sb, "saa": saa, "sbb": sbb, "sab": sab, "qx": t(qx), "qy": t(qy), "ux": t(ux),
              "uy": t(uy)} if higher else {})
    return Moments(
        n=n, shift_x=t(cx), shift_y=t(cy), sx=t(sx), sy=t(sy), sxx=t(sxx), syy=t(syy), sxy=t(sxy),
        constant_x=checks[0].constant, constant_y=checks[1].constant, **extra,
    )


def _accumulate_numpy(X: Any, Y: Any, ops, rows: int, higher: bool) -> Moments:
    """:func:`accumulate` on CPU: every moment from one BLAS ``syrk`` per chunk.

    Each chunk is centred (and converted to float64 in the same pass) into one reused buffer
    ``W = [x' | y' | a | b | 1]`` (``a``, ``b`` the squared row norms, only for the unbiased HSIC), and ``W'W``
    holds :math:`S_{xx}, S_{yy}, S_{xy}` and, in its last rows, the column sums, :math:`\\sum a_i x'_i` etc.: one
    symmetric product (half the multiply-adds of a general one) and no other pass over the chunk. A NaN or inf
    in the chunk makes the row of column sums non-finite, so finiteness costs nothing more; the magnitude check is
    skipped for dtypes that cannot leave its range (float32 and narrower, integers).
    """
    n, dx = X.shape
    dy = Y.shape[1]
    ia, ib = dx + dy, dx + dy + 1  # columns of a and b (higher only); the last column is all ones
    width = dx + dy + (3 if higher else 1)
    rows = max(1, min(rows, n))
    torch = sys.modules.get("torch")  # its cast-copy is faster than numpy's mixed-type loop; never imported for it
    buf = np.empty((rows, width))
    buf_t = torch.from_numpy(buf) if torch is not None else None
    buf[:, -1] = 1.0
    G = None  # the sum of the chunks' W'W (the first chunk's own buffer: no copy for a single chunk)
    g = np.empty((width, width))
    checks = RowChecks("X"), RowChecks("Y")
    scale = not scale_bounded(X), not scale_bounded(Y)
    cx = cy = None
    for s, e in iter_chunks(n, rows):
        xb, yb = ops.chunk(X, s, e), ops.chunk(Y, s, e)
        checks[0].update(xb, s, e, finite=False, scale=scale[0])
        checks[1].update(yb, s, e, finite=False, scale=scale[1])
        if cx is None:  # the shift: mean of the first rows (enough to keep the centring correction exact)
            head = min(e - s, SHIFT_ROWS)
            cx, cy = xb[:head].mean(0, dtype=np.float64), yb[:head].mean(0, dtype=np.float64)
            if torch is not None:
                cxt, cyt = torch.from_numpy(cx), torch.from_numpy(cy)
        W = buf[: e - s]
        if torch is not None:  # convert and centre in place; the same IEEE operations either way
            Wt = buf_t[: e - s]
            Wt[:, :dx].copy_(from_numpy(xb)).sub_(cxt)
            Wt[:, dx:dx + dy].copy_(from_numpy(yb)).sub_(cyt)
        else:
            np.subtract(xb, cx, out=W[:, :dx])
            np.subtract(yb, cy, out=W[:, dx:dx + dy])
        if higher:
            np.einsum("ij,ij->i", W[:, :dx], W[:, :dx], out=W[:, ia])
            np.einsum("ij,ij->i", W[:, dx:dx + dy], W[:, dx:dx + dy], out=W[:, ib])
        np.matmul(W.T, W, out=g)
        sums = g[-1]
        if not np.isfinite(sums).all():
            for k, (c, lo, hi) in enumerate(((xb, 0, dx), (yb, dx, dx + dy))):
                if not np.isfinite(sums[lo:hi]).all():
                    checks[k].nonfinite(c, s, e)
            raise ValueError(  # finite inputs whose fourth-order sums overflow
                "the features are too large for float64 fourth-order sums; rescale them (e.g. divide by their "
                "largest absolute value)")
        if G is None:
            G, g = g, (np.empty((width, width)) if e < n else None)
        else:
            G += g
    checks[0].finish(allow_constant=True)  # constancy is reported by the metric that needs it
    checks[1].finish(allow_constant=True)
    t = ops.tensor  # numpy views of G's blocks
    sums = G[-1]
    extra = {}
    if higher:
        extra = {"sa": float(sums[ia]), "sb": float(sums[ib]), "saa": float(G[ia, ia]), "sbb": float(G[ib, ib]),
                 "sab": float(G[ia, ib]), "qx": t(G[:dx, ia]), "qy": t(G[dx:dx + dy, ib]),
                 "ux": t(G[:dx, ib]), "uy": t(G[dx:dx + dy, ia])}
    return Moments(
        n=n, shift_x=t(cx), shift_y=t(cy), sx=t(sums[:dx]), sy=t(sums[dx:dx + dy]),
        sxx=t(G[:dx, :dx]), syy=t(G[dx:dx + dy, dx:dx + dy]), sxy=t(G[:dx, dx:dx + dy]),
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

    def sq(s, a, b):  # ||s - a b' / n||_F^2
        if isinstance(s, np.ndarray):  # the same IEEE operations as s - outer(a, b) / n, in one buffer
            c = np.multiply.outer(a, b)
            c /= m.n
            np.subtract(s, c, out=c)
            c = c.reshape(-1)  # contiguous: BLAS ddot, no copy of a strided view
            return float(c @ c)
        import torch

        c = torch.addr(s, a, b, alpha=-1.0 / m.n)  # in place of a temporary outer product
        return float(torch.dot(c.reshape(-1), c.reshape(-1)))

    num = sq(m.sxy, m.sx, m.sy)
    den = math.sqrt(sq(m.sxx, m.sx, m.sx) * sq(m.syy, m.sy, m.sy))
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


def _as_torch(m: Moments) -> Moments:
    """``m`` with torch tensors (CCA and Procrustes decompose the moments with ``torch.linalg``)."""
    import torch

    if not isinstance(m.sxx, np.ndarray):
        return m
    conv = {f: torch.from_numpy(np.ascontiguousarray(v)) for f, v in vars(m).items() if isinstance(v, np.ndarray)}
    return replace(m, **conv)


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

    m = _as_torch(m)

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
    m = _as_torch(m)
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
    m = _as_torch(m)
    nuc = float(torch.linalg.svdvals(m.cxy).sum())
    nx, ny = float(torch.trace(m.cxx)), float(torch.trace(m.cyy))
    return procrustes_value(nuc / math.sqrt(nx * ny), form), {"form": form, "route": "features"}


def procrustes_value(cos: float, form: str) -> float:
    cos = min(1.0, max(0.0, cos))
    if form == "angular":
        return math.acos(cos)
    return math.sqrt(max(0.0, 2.0 - 2.0 * cos))
