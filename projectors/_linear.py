"""Closed-form maps: chunked second moments, orthogonal Procrustes, CCA.

All of them read X and Y chunk by chunk (memory-mapped arrays stay on disk) and accumulate the second moments
in float64, so cost is ``O(n d^2)`` time and ``O(d^2)`` memory.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from align._validation import (
    check_float,
    check_int,
    check_not_constant,
    check_paired,
    is_torch,
)

from ._base import Projector, register

log = logging.getLogger(__name__)

CHUNK = 8192


def _chunks(X: Any, device):
    import torch

    from align._backend import as_torch

    for start in range(0, X.shape[0], CHUNK):
        chunk = X[start:start + CHUNK]
        if not is_torch(chunk):  # a fresh writable float64 copy (memory-maps are read-only)
            chunk = np.array(chunk, dtype=np.float64)
        yield as_torch(chunk, device=device, dtype=torch.float64)


def moments(X: Any, Y: Any, *, center: bool = True, device=None):
    r"""Means and (centred) cross-products, accumulated in float64 over row chunks.

    Returns ``mean_x`` (d_x,), ``mean_y`` (d_y,), :math:`X_c^\top X_c`, :math:`X_c^\top Y_c`, :math:`Y_c^\top Y_c`
    as float64 torch tensors (sums, not averages). ``center=False`` gives zero means and raw products.
    """
    import torch

    from align._backend import resolve_device

    device = resolve_device(device, X, Y)
    n = X.shape[0]
    dx, dy = X.shape[1], Y.shape[1]
    mx = torch.zeros(dx, dtype=torch.float64, device=device)
    my = torch.zeros(dy, dtype=torch.float64, device=device)
    if center:
        for xc in _chunks(X, device):
            mx += xc.sum(0)
        for yc in _chunks(Y, device):
            my += yc.sum(0)
        mx /= n
        my /= n
    sxx = torch.zeros(dx, dx, dtype=torch.float64, device=device)
    sxy = torch.zeros(dx, dy, dtype=torch.float64, device=device)
    syy = torch.zeros(dy, dy, dtype=torch.float64, device=device)
    for xc, yc in zip(_chunks(X, device), _chunks(Y, device)):
        xc = xc - mx
        yc = yc - my
        sxx += xc.T @ xc
        sxy += xc.T @ yc
        syy += yc.T @ yc
    return mx, my, sxx, sxy, syy


def _svd_flip(U, V):
    """Deterministic signs: the largest-magnitude entry of each column of U is positive (as scikit-learn)."""
    import torch

    idx = U.abs().argmax(0)
    signs = torch.sign(U[idx, torch.arange(U.shape[1], device=U.device)])
    signs[signs == 0] = 1
    return U * signs, V * signs


def ridge_solve(X: Any, Y: Any, *, alpha: float, fit_intercept: bool, device=None):
    r"""Closed-form ridge regression :math:`\min_{W,b} \|Y - XW - b\|_F^2 + \alpha \|W\|_F^2` in float64
    (:func:`align._ridge.ridge_fit`; ``alpha=0`` is the minimum-norm least-squares solution)."""
    from align._ridge import ridge_fit

    return ridge_fit(X, Y, alpha=alpha, fit_intercept=fit_intercept, device=device)


@register("procrustes", "orthogonal map (rotation/reflection) by SVD of X^T Y; zero-pads unequal dimensions")
class ProcrustesProjector(Projector):
    r"""Orthogonal Procrustes: the rotation (or reflection) that best carries X onto Y.

    .. math::
        R^\star = \arg\min_{R^\top R = I} \|\tilde X_c R - \tilde Y_c\|_F = U V^\top, \qquad
        U \Sigma V^\top = \tilde X_c^\top \tilde Y_c,

    where :math:`\tilde X_c, \tilde Y_c` are the centred inputs zero-padded to :math:`d = \max(d_x, d_y)` columns
    (Maiorca et al. 2023, "Latent space translation via semantic alignment"). ``transform`` returns
    :math:`s(\tilde X - \mu_x) R + \mu_y` truncated to :math:`d_y` columns, with the isotropic scale :math:`s =
    \operatorname{tr}\Sigma / \|\tilde X_c\|_F^2` when ``scale=True`` (else 1). Exact for rotated data; use it when
    the two spaces have the same geometry up to an isometry, and ``linear`` when they do not.

    Parameters
    ----------
    center : bool
        Subtract the means first (an affine rather than linear isometry).
    scale : bool
        Also fit one isotropic scale factor.
    """

    def __init__(self, *, center: bool = True, scale: bool = False):
        self.center = center
        self.scale = scale

    def fit(self, X: Any, Y: Any) -> ProcrustesProjector:
        import torch

        X, Y = check_paired(X, Y)
        check_not_constant(X, "X")
        check_not_constant(Y, "Y")
        mx, my, sxx, sxy, _ = moments(X, Y, center=self.center)
        dx, dy = sxy.shape
        d = max(dx, dy)
        M = torch.zeros(d, d, dtype=torch.float64, device=sxy.device)
        M[:dx, :dy] = sxy
        U, S, Vh = torch.linalg.svd(M)
        self.rotation_ = U @ Vh  # (d, d)
        self.scale_ = float(S.sum() / sxx.trace()) if self.scale else 1.0
        self.mean_x_, self.mean_y_ = mx, my
        self.n_features_in_, self.n_features_y_ = dx, dy
        return self

    def _transform_torch(self, X, side):
        import torch

        if side == "y":
            return X
        R = self.rotation_.to(X.device)
        Xc = X.to(torch.float64) - self.mean_x_.to(X.device)
        out = self.scale_ * (Xc @ R[: X.shape[1], :])
        return out[:, : self.n_features_y_] + self.mean_y_.to(X.device)

    def _get_state(self):
        return {"rotation": self.rotation_.cpu(), "scale": self.scale_, "mean_x": self.mean_x_.cpu(),
                "mean_y": self.mean_y_.cpu()}

    def _set_state(self, s):
        self.rotation_, self.scale_ = s["rotation"], float(s["scale"])
        self.mean_x_, self.mean_y_ = s["mean_x"], s["mean_y"]


def _inv_sqrt(C, name: str):
    import torch

    evals, evecs = torch.linalg.eigh(C)
    if evals.min() <= 1e-12 * max(float(evals.max()), 1e-300):
        raise ValueError(
            f"the covariance of {name} is singular (n <= d, or collinear / constant features); set `reg` > 0"
        )
    return (evecs * evals.rsqrt()) @ evecs.T


@register("cca", "canonical correlation analysis: both sides into a shared k-dim space of maximal correlation")
class CCAProjector(Projector):
    r"""Canonical correlation analysis (Hotelling 1936): both sides into a shared ``n_components``-dim space.

    With covariances :math:`C_{xx} + r I`, :math:`C_{yy} + r I` and cross-covariance :math:`C_{xy}`,

    .. math::
        U \Sigma V^\top = (C_{xx} + rI)^{-1/2} C_{xy} (C_{yy} + rI)^{-1/2}, \quad
        W_x = (C_{xx} + rI)^{-1/2} U_{:k}, \quad W_y = (C_{yy} + rI)^{-1/2} V_{:k},

    and ``transform(X)`` :math:`= (X - \mu_x) W_x`, ``transform_y(Y)`` :math:`= (Y - \mu_y) W_y`. The canonical
    correlations are :math:`\Sigma_{:k}` (``correlations_``); with ``reg=0`` they equal those of scikit-learn's
    iterative ``CCA`` at convergence, computed here in closed form in :math:`O(n d^2 + d^3)`. Hadgi et al. (2025)
    align 3D and text encoders in such a subspace; ``make_projector("subspace")`` picks ``k`` for you.

    Parameters
    ----------
    n_components : int
        The shared dimension k (at most ``min(d_x, d_y)``).
    reg : float
        Ridge added to both covariances (needed when n <= d or features are collinear).
    scale_by_correlation : bool
        Multiply canonical variate j by its correlation, so that weakly correlated directions count less in
        cosine retrieval.
    """

    def __init__(self, *, n_components: int = 64, reg: float = 0.0, scale_by_correlation: bool = False):
        self.n_components = n_components
        self.reg = reg
        self.scale_by_correlation = scale_by_correlation

    def _validate_params(self) -> None:
        check_int("n_components", self.n_components, min_value=1)
        check_float("reg", self.reg, min_value=0.0)

    def fit(self, X: Any, Y: Any) -> CCAProjector:
        import torch

        X, Y = check_paired(X, Y)
        check_not_constant(X, "X")
        check_not_constant(Y, "Y")
        k = check_int("n_components", self.n_components, min_value=1)
        if k > min(X.shape[1], Y.shape[1]):
            raise ValueError(
                f"`n_components` must be <= min(d_x, d_y) = {min(X.shape[1], Y.shape[1])} (X has {X.shape[1]} "
                f"features, Y {Y.shape[1]}), got {k}; pass n_components={min(X.shape[1], Y.shape[1])} or fewer"
            )
        reg = check_float("reg", self.reg, min_value=0.0)
        n = X.shape[0]
        mx, my, sxx, sxy, syy = moments(X, Y, center=True)
        cxx = sxx / (n - 1) + reg * torch.eye(sxx.shape[0], dtype=torch.float64, device=sxx.device)
        cyy = syy / (n - 1) + reg * torch.eye(syy.shape[0], dtype=torch.float64, device=syy.device)
        kx, ky = _inv_sqrt(cxx, "X"), _inv_sqrt(cyy, "Y")
        U, S, Vh = torch.linalg.svd(kx @ (sxy / (n - 1)) @ ky)
        U, V = _svd_flip(U[:, :k], Vh[:k].T)
        self.x_weights_ = kx @ U
        self.y_weights_ = ky @ V
        self.correlations_ = S[:k].clone()
        self.mean_x_, self.mean_y_ = mx, my
        self.n_features_in_, self.n_features_y_ = X.shape[1], Y.shape[1]
        return self

    def _transform_torch(self, X, side):
        import torch

        W = (self.x_weights_ if side == "x" else self.y_weights_).to(X.device)
        mu = (self.mean_x_ if side == "x" else self.mean_y_).to(X.device)
        out = (X.to(torch.float64) - mu) @ W
        if self.scale_by_correlation:
            out = out * self.correlations_.to(X.device)
        return out

    def _get_state(self):
        return {"x_weights": self.x_weights_.cpu(), "y_weights": self.y_weights_.cpu(),
                "correlations": self.correlations_.cpu(), "mean_x": self.mean_x_.cpu(), "mean_y": self.mean_y_.cpu()}

    def _set_state(self, s):
        self.x_weights_, self.y_weights_ = s["x_weights"], s["y_weights"]
        self.correlations_, self.mean_x_, self.mean_y_ = s["correlations"], s["mean_x"], s["mean_y"]
