r"""Automatic ridge regularisation for closed-form linear maps: k-fold validation of the metric the map is for.

A linear map :math:`x \mapsto (x - \mu_x) W + \mu_y` fitted by ridge regression,

.. math:: W(\alpha) = \arg\min_W \lVert Y_c - X_c W \rVert_F^2 + \alpha \lVert W \rVert_F^2
          = (X_c^\top X_c + \alpha I)^{-1} X_c^\top Y_c,

is meant, in this library, for retrieval: a mapped query should have its own partner as nearest neighbour by cosine.
The squared error that ridge minimises is a poor guide to the :math:`\alpha` that retrieves best (scikit-learn's
``RidgeCV`` picks by squared error), so :func:`ridge_cv` scores each candidate :math:`\alpha` by held-out
**retrieval R@1** (mean squared error on request) over ``n_folds`` folds and keeps, by default, the **smallest**
:math:`\alpha` whose mean score is within one standard error (over folds) of the best.

Every candidate of a fold costs one matrix product, not one solve: with the eigendecomposition
:math:`X_c^\top X_c = V \operatorname{diag}(\lambda) V^\top` of the fold's training rows,

.. math:: \hat Y_{\text{val}}(\alpha) = (X_{\text{val}} - \mu_x) V \operatorname{diag}\!\big(1/(\lambda + \alpha)\big)
          V^\top X_c^\top Y_c + \mu_y ,

and :math:`1/\lambda` is read as 0 on the null space when :math:`\alpha = 0` (the minimum-norm least-squares
solution, as ``np.linalg.lstsq``). With fewer training rows than features the same formula is evaluated in the
dual, from the eigendecomposition of :math:`X_c X_c^\top` (n x n), so it stays cheap and defined. The second moments
are accumulated in float64 over row chunks (memory-maps stay on disk; ``O(k (d_x^2 + d_x d_y))`` memory), in torch
on the input's device (CPU or GPU).

Cosine retrieval against uncentred targets is dominated by their common mean when it is large (sentence
encoders, prompt templates): the least-squares intercept :math:`\mu_y` pulls every prediction towards it. So the
validation also chooses how much of it to add back, :math:`\hat y = (x - \mu_x) W + \gamma \mu_y` for
:math:`\gamma` in :data:`INTERCEPT_SCALES` (1 is plain ridge), at the cost of one addition per candidate.

The grid is relative to the spectrum: candidate :math:`\alpha = r \cdot \bar\lambda` for ``r`` in
``relative_alphas`` (0 and a log-spaced range), with :math:`\bar\lambda` the mean non-zero eigenvalue of
:math:`X_c^\top X_c` (its trace over its rank), so raw features (norms in the tens) and L2-normalised features get
the same grid in their own units. The chosen :math:`\alpha` is reported in the units of the full data (``r`` times
the full data's :math:`\bar\lambda`), ready to pass to a final fit; measured curves are in
``benchmarks/README.md`` ("Projector defaults vs least squares").
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np

from ._validation import check_choice, check_float, check_int, check_rng, is_torch

log = logging.getLogger(__name__)

__all__ = ["INTERCEPT_SCALES", "RIDGE_GRID", "RidgeCVResult", "ridge_cv", "ridge_fit"]

#: The default relative grid: 0 (least squares) then half-decades from 1e-5 to 1e2 times the mean eigenvalue.
RIDGE_GRID: tuple[float, ...] = (0.0,) + tuple(float(10.0 ** e) for e in np.arange(-5.0, 2.01, 0.5))

#: Candidate weights of Y's mean in the prediction (1: the least-squares intercept). Cosine retrieval against
#: uncentred targets is dominated by a large common mean (sentence encoders, prompt templates); shrinking it is
#: validated like alpha.
INTERCEPT_SCALES: tuple[float, ...] = (1.0, 0.5, 0.25, 0.1, 0.0)

CHUNK = 8192
#: Held-out rows scored per fold at most, and the candidate-set size of the held-out retrieval.
MAX_VAL_ROWS = 2000
RETRIEVAL_BLOCK = 1000


@dataclasses.dataclass(frozen=True)
class RidgeCVResult:
    r"""What :func:`ridge_cv` chose and why.

    Attributes
    ----------
    alpha : float
        The chosen penalty in the units of the full data (pass it as ``alpha=`` to a final fit).
    relative_alpha : float
        The same, relative to the mean non-zero eigenvalue of :math:`X_c^\top X_c`.
    alphas, relative_alphas : tuple of float
        The grid, absolute (full data) and relative.
    mean, std : tuple of float
        Mean and standard deviation over folds of the held-out score at each grid point.
    fold_scores : tuple of tuple of float
        ``fold_scores[f][j]``: fold ``f``'s score at grid point ``j``.
    best_alpha : float
        The grid point with the best mean score (the chosen one may differ by ``rule``).
    scoring : {"r@1", "mse"}
    rule : {"smallest", "largest", "best"}
    n_folds, n_samples : int
    intercept_scale : float
        :math:`\gamma`: the map adds back :math:`\gamma \mu_y` instead of :math:`\mu_y` (1 for ``"mse"``).
    intercept_scales : tuple of float
        The candidates for :math:`\gamma`.
    mean_by_intercept_scale : tuple of tuple of float
        Mean score at every (alpha, gamma) cell; ``mean``/``std``/``fold_scores`` are the column of the chosen
        :math:`\gamma`.
    """

    alpha: float
    relative_alpha: float
    alphas: tuple
    relative_alphas: tuple
    mean: tuple
    std: tuple
    fold_scores: tuple
    best_alpha: float
    scoring: str
    rule: str
    n_folds: int
    n_samples: int
    intercept_scale: float = 1.0
    intercept_scales: tuple = (1.0,)
    mean_by_intercept_scale: tuple = ()

    def to_dict(self) -> dict:
        """Plain values (lists, floats, str) for JSON and checkpoints."""
        d = dataclasses.asdict(self)
        return {k: (list(map(list, v)) if k in ("fold_scores", "mean_by_intercept_scale")
                    else list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> RidgeCVResult:
        d = dict(d)
        for k in ("alphas", "relative_alphas", "mean", "std"):
            d[k] = tuple(float(v) for v in d[k])
        for k in ("fold_scores", "mean_by_intercept_scale"):
            d[k] = tuple(tuple(float(v) for v in row) for row in d.get(k, ()))
        d["intercept_scales"] = tuple(float(v) for v in d.get("intercept_scales", (1.0,)))
        return cls(**d)


# ---- helpers ---------------------------------------------------------------------------------------------------
def _device(device, X, Y):
    from ._backend import resolve_device

    return resolve_device(device, X, Y)


def _rows(A: Any, rows: np.ndarray | slice, device):
    """Rows of A as a float64 tensor on ``device`` (numpy/memmap fancy indexing reads only those rows)."""
    import torch

    from ._backend import as_torch

    if is_torch(A):
        if isinstance(rows, np.ndarray):
            rows = torch.from_numpy(rows).to(A.device)
        return A[rows].to(device=device, dtype=torch.float64)
    return as_torch(np.asarray(A[rows], dtype=np.float64), device=device)


def _null_tol(evals) -> float:
    top = float(evals.abs().max()) if evals.numel() else 0.0
    return max(top, 1e-300) * max(evals.shape[0], 1) * 1e-12


def _shrink(evals, alpha: float):
    """``1 / (evals + alpha)``, with 0 on the (numerical) null space when ``alpha == 0``."""
    import torch

    if alpha > 0:
        return 1.0 / (evals.clamp(min=0.0) + alpha)
    out = torch.zeros_like(evals)
    keep = evals > _null_tol(evals)
    out[keep] = 1.0 / evals[keep]
    return out


def _mean_eigenvalue(trace: float, rank: int) -> float:
    return trace / max(rank, 1)


def _scores(Q, my, Yv, scoring: str, gv: np.ndarray | None, gammas) -> np.ndarray:
    """Held-out scores (larger is better) of the predictions ``Q + gamma * my`` for every ``gamma``.

    ``"r@1"``: the share of rows whose prediction has its own ``Yv`` row as nearest neighbour by cosine within
    blocks of at most RETRIEVAL_BLOCK candidates (the query norm does not change the argmax over candidates, so every
    ``gamma`` costs one add); ``"mse"``: minus the mean squared error per row."""
    import torch

    if scoring == "mse":
        return np.array([-float(((Q + g * my - Yv) ** 2).sum(1).mean()) for g in gammas])
    G = Yv / Yv.norm(dim=1, keepdim=True).clamp(min=1e-300)
    m = Q.shape[0]
    hits = np.zeros(len(gammas))
    for block in np.array_split(np.arange(m), math.ceil(m / RETRIEVAL_BLOCK)):
        b = torch.from_numpy(block).to(Q.device)
        S0 = Q[b] @ G[b].T
        mterm = G[b] @ my
        for j, g in enumerate(gammas):
            top = (S0 + g * mterm).argmax(1).cpu().numpy()
            if gv is None:
                hits[j] += int((top == np.arange(len(block))).sum())
            else:
                gb = gv[block]
                hits[j] += int((gb[top] == gb).sum())
    return hits / m


def _folds(n: int, n_folds: int, groups: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Fold id per row (rows of one group share a fold); a deterministic function of ``rng``."""
    if groups is None:
        fold = np.empty(n, dtype=np.int64)
        fold[rng.permutation(n)] = np.arange(n) % n_folds
        return fold
    keys, inverse = np.unique(groups, return_inverse=True)
    key_fold = np.empty(len(keys), dtype=np.int64)
    key_fold[rng.permutation(len(keys))] = np.arange(len(keys)) % n_folds
    return key_fold[inverse]


# ---- the final fit ---------------------------------------------------------------------------------------------
def ridge_fit(X: Any, Y: Any, *, alpha: float, fit_intercept: bool = True, intercept_scale: float = 1.0,
              device: Any = None):
    r"""Ridge regression :math:`\min_{W,b}\lVert Y - XW - b\rVert_F^2 + \alpha\lVert W\rVert_F^2` in float64.

    Parameters
    ----------
    X, Y : array or tensor of shape (n, d_x), (n, d_y)
        Read in row chunks (memory-maps stay on disk) when ``n >= d_x``; with fewer rows than features the dual
        form :math:`W = X_c^\top (X_c X_c^\top + \alpha I)^{-1} Y_c` is used.
    alpha : float
        ``>= 0``; 0 gives the minimum-norm least-squares solution (as ``np.linalg.lstsq``), defined even when
        :math:`X_c^\top X_c` is singular.
    fit_intercept : bool
        Centre both sides first and return :math:`b = \gamma \mu_y - \mu_x W`.
    intercept_scale : float
        :math:`\gamma` (1: the least-squares intercept; see :func:`ridge_cv`).
    device : optional
        Default: the device of a torch input, else CPU.

    Returns
    -------
    W : torch.Tensor (d_x, d_y), float64
    b : torch.Tensor (d_y,), float64
    """
    import torch

    alpha = check_float("alpha", alpha, min_value=0.0)
    gamma = check_float("intercept_scale", intercept_scale, min_value=0.0)
    dev = _device(device, X, Y)
    n, dx = X.shape
    dy = Y.shape[1]
    if n < dx:  # dual
        Xt, Yt = _rows(X, slice(None), dev), _rows(Y, slice(None), dev)
        mx = Xt.mean(0) if fit_intercept else torch.zeros(dx, dtype=torch.float64, device=dev)
        my = Yt.mean(0) if fit_intercept else torch.zeros(dy, dtype=torch.float64, device=dev)
        Xc, Yc = Xt - mx, Yt - my
        s, U = torch.linalg.eigh(Xc @ Xc.T)
        W = Xc.T @ (U * _shrink(s, alpha)) @ (U.T @ Yc)
        return W, gamma * my - mx @ W
    mx, my, sxx, sxy = _moments(X, Y, fit_intercept, dev)
    if alpha > 0:
        A = sxx + alpha * torch.eye(dx, dtype=torch.float64, device=dev)
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) == 0:
            W = torch.cholesky_solve(sxy, L)
            return W, gamma * my - mx @ W
    lam, V = torch.linalg.eigh(sxx)
    W = (V * _shrink(lam, alpha)) @ (V.T @ sxy)
    return W, gamma * my - mx @ W


def _moments(X, Y, center: bool, dev):
    import torch

    n, dx = X.shape
    dy = Y.shape[1]
    sx = torch.zeros(dx, dtype=torch.float64, device=dev)
    sy = torch.zeros(dy, dtype=torch.float64, device=dev)
    sxx = torch.zeros(dx, dx, dtype=torch.float64, device=dev)
    sxy = torch.zeros(dx, dy, dtype=torch.float64, device=dev)
    for s in range(0, n, CHUNK):
        xc, yc = _rows(X, slice(s, s + CHUNK), dev), _rows(Y, slice(s, s + CHUNK), dev)
        sx += xc.sum(0)
        sy += yc.sum(0)
        sxx += xc.T @ xc
        sxy += xc.T @ yc
    if not center:
        return sx * 0, sy * 0, sxx, sxy
    mx, my = sx / n, sy / n
    return mx, my, sxx - n * torch.outer(mx, mx), sxy - n * torch.outer(mx, my)


# ---- cross-validation ------------------------------------------------------------------------------------------
def ridge_cv(
    X: Any,
    Y: Any,
    *,
    fit_intercept: bool = True,
    scoring: str = "r@1",
    n_folds: int = 5,
    relative_alphas: Any = None,
    rule: str = "smallest",
    intercept_scales: Any = None,
    groups: Any = None,
    rng: Any = 0,
    device: Any = None,
) -> RidgeCVResult:
    r"""Choose the ridge penalty of a linear map from X to Y by k-fold validation of held-out retrieval.

    Parameters
    ----------
    X, Y : array, memory-map or tensor of shape (n, d_x), (n, d_y)
        Paired rows (row i of X and row i of Y are one item). Read in row chunks.
    fit_intercept : bool
        Centre both sides with each fold's training means (the map is affine).
    scoring : {"r@1", "mse"}
        ``"r@1"``: the share of held-out rows whose mapped X row has its own Y row as nearest neighbour by cosine
        among the fold's held-out Y rows (at most 2,000 held-out rows per fold are scored, in candidate sets of at
        most 1,000). ``"mse"``: mean squared error per held-out row (smaller is better).
    n_folds : int
        Number of folds (at least 2; reduced so every fold holds at least 2 rows).
    relative_alphas : sequence of float, optional
        The grid relative to the mean non-zero eigenvalue of :math:`X_c^\top X_c` (default :data:`RIDGE_GRID`:
        0, then :math:`10^{-5}, 10^{-4.5}, \dots, 10^{2}`).
    intercept_scales : sequence of float, optional
        Candidate :math:`\gamma`: the prediction is :math:`(x - \mu_x) W + \gamma \mu_y`. Default
        :data:`INTERCEPT_SCALES` (1, 0.5, 0.25, 0.1, 0) for ``"r@1"`` with an intercept, else ``(1,)``. The best
        (alpha, gamma) cell fixes :math:`\gamma`; ``rule`` then picks alpha along that column.
    rule : {"smallest", "largest", "best"}
        ``"smallest"``: the smallest :math:`\alpha` whose mean score is within one standard error (std over folds /
        :math:`\sqrt{k}`) of the best mean; ``"largest"``: the largest such :math:`\alpha` (the classic one-standard-
        error rule); ``"best"``: the best mean.
    groups : int array of shape (n,), optional
        Rows with the same group (several captions of one image) share a fold and count as each other's positives.
    rng : int, numpy.random.Generator or None
        Seed of the fold assignment (an int gives the same folds every call).
    device : optional
        Default: the device of a torch input, else CPU.

    Returns
    -------
    RidgeCVResult
        The chosen ``alpha`` (full-data units) and the validation curve.

    Notes
    -----
    Cost: one pass over the rows for the per-fold second moments, one :math:`d_x \times d_x` eigendecomposition per
    fold (:math:`n \times n` in the dual when the fold has fewer rows than features), and per grid point one
    product of the held-out rows with a :math:`d_x \times d_y` matrix plus the held-out similarity blocks.
    """
    import torch

    scoring = check_choice("scoring", scoring, ("r@1", "mse"))
    rule = check_choice("rule", rule, ("smallest", "largest", "best"))
    grid = RIDGE_GRID if relative_alphas is None else tuple(
        check_float("relative_alphas", a, min_value=0.0) for a in np.atleast_1d(np.asarray(relative_alphas, float)))
    grid = tuple(sorted(set(grid)))
    if intercept_scales is None:
        gammas = INTERCEPT_SCALES if (scoring == "r@1" and fit_intercept) else (1.0,)
    else:
        gammas = tuple(check_float("intercept_scales", v, min_value=0.0)
                       for v in np.atleast_1d(np.asarray(intercept_scales, float)))
    if not grid:
        raise ValueError("`relative_alphas` is empty; give at least one value >= 0")
    n, dx = X.shape
    if Y.shape[0] != n:
        raise ValueError(f"`X` and `Y` must have the same number of rows, got {n} and {Y.shape[0]}")
    n_folds = min(check_int("n_folds", n_folds, min_value=2), n // 2)
    if n_folds < 2:
        raise ValueError(f"automatic alpha needs at least 4 pairs for 2 folds of 2, got {n}; pass a number as alpha")
    gen = check_rng(rng)
    g = None if groups is None else np.asarray(groups)
    if g is not None and len(np.unique(g)) < 2 * n_folds:
        n_folds = max(2, len(np.unique(g)) // 2)
    fold = _folds(n, n_folds, g, gen)
    dev = _device(device, X, Y)

    # scored rows of each fold (at most MAX_VAL_ROWS, a deterministic subset)
    val_rows = []
    for f in range(n_folds):
        rows = np.flatnonzero(fold == f)
        if len(rows) > MAX_VAL_ROWS:
            rows = np.sort(gen.choice(rows, MAX_VAL_ROWS, replace=False))
        val_rows.append(rows)
    n_train_min = int(min(n - (fold == f).sum() for f in range(n_folds)))
    dual = n_train_min < dx

    scores = np.zeros((n_folds, len(grid), len(gammas)))
    if dual:  # few rows: everything fits in memory; eigendecomposition of the n_tr x n_tr Gram matrix
        Xt, Yt = _rows(X, slice(None), dev), _rows(Y, slice(None), dev)
        for f in range(n_folds):
            tr = torch.from_numpy(np.flatnonzero(fold != f)).to(dev)
            va = torch.from_numpy(val_rows[f]).to(dev)
            Xtr, Ytr = Xt[tr], Yt[tr]
            mx = Xtr.mean(0) if fit_intercept else torch.zeros(dx, dtype=torch.float64, device=dev)
            my = Ytr.mean(0) if fit_intercept else torch.zeros(Yt.shape[1], dtype=torch.float64, device=dev)
            Xc = Xtr - mx
            s, U = torch.linalg.eigh(Xc @ Xc.T)
            P = ((Xt[va] - mx) @ Xc.T) @ U
            B = U.T @ (Ytr - my)
            lam_bar = _mean_eigenvalue(float(s.clamp(min=0).sum()), min(len(tr) - int(fit_intercept), dx))
            scores[f] = _curve(P, B, s, my, Yt[va], grid, lam_bar, scoring, None if g is None else g[val_rows[f]],
                               gammas)
    else:  # one streaming pass: per-fold uncentred moments, each fold's training moments by subtraction
        dy = Y.shape[1]
        Gx = torch.zeros(n_folds, dx, dx, dtype=torch.float64, device=dev)
        Gxy = torch.zeros(n_folds, dx, dy, dtype=torch.float64, device=dev)
        Sx = torch.zeros(n_folds, dx, dtype=torch.float64, device=dev)
        Sy = torch.zeros(n_folds, dy, dtype=torch.float64, device=dev)
        counts = np.bincount(fold, minlength=n_folds)
        for s0 in range(0, n, CHUNK):
            xc, yc = _rows(X, slice(s0, s0 + CHUNK), dev), _rows(Y, slice(s0, s0 + CHUNK), dev)
            fc = fold[s0:s0 + CHUNK]
            for f in range(n_folds):
                sel = torch.from_numpy(np.flatnonzero(fc == f)).to(dev)
                xf, yf = xc[sel], yc[sel]
                Gx[f] += xf.T @ xf
                Gxy[f] += xf.T @ yf
                Sx[f] += xf.sum(0)
                Sy[f] += yf.sum(0)
        Gx_all, Gxy_all, Sx_all, Sy_all = Gx.sum(0), Gxy.sum(0), Sx.sum(0), Sy.sum(0)
        for f in range(n_folds):
            n_tr = int(n - counts[f])
            sxx, sxy = Gx_all - Gx[f], Gxy_all - Gxy[f]
            if fit_intercept:
                mx, my = (Sx_all - Sx[f]) / n_tr, (Sy_all - Sy[f]) / n_tr
                sxx = sxx - n_tr * torch.outer(mx, mx)
                sxy = sxy - n_tr * torch.outer(mx, my)
            else:
                mx = torch.zeros(dx, dtype=torch.float64, device=dev)
                my = torch.zeros(dy, dtype=torch.float64, device=dev)
            lam, V = torch.linalg.eigh(sxx)
            Xv, Yv = _rows(X, val_rows[f], dev), _rows(Y, val_rows[f], dev)
            P = (Xv - mx) @ V
            B = V.T @ sxy
            lam_bar = _mean_eigenvalue(float(lam.clamp(min=0).sum()), min(n_tr - int(fit_intercept), dx))
            scores[f] = _curve(P, B, lam, my, Yv, grid, lam_bar, scoring, None if g is None else g[val_rows[f]],
                               gammas)
        del Gx, Gxy

    cell_mean = scores.mean(0)  # (n_alpha, n_gamma)
    gi = int(np.unravel_index(np.argmax(cell_mean), cell_mean.shape)[1])  # the intercept scale of the best cell
    at = scores[:, :, gi]
    mean, std = at.mean(0), at.std(0, ddof=1)
    best = int(np.argmax(mean))
    se = std[best] / math.sqrt(n_folds)
    ok = np.flatnonzero(mean >= mean[best] - se - 1e-12)
    pick = {"smallest": int(ok.min()), "largest": int(ok.max()), "best": best}[rule]
    lam_full = _full_mean_eigenvalue(X, fit_intercept, dev)
    alphas = tuple(float(r * lam_full) for r in grid)
    sgn = 1.0 if scoring == "r@1" else -1.0  # report MSE as MSE
    res = RidgeCVResult(
        alpha=alphas[pick], relative_alpha=float(grid[pick]), alphas=alphas, relative_alphas=tuple(grid),
        mean=tuple(float(sgn * v) for v in mean), std=tuple(float(v) for v in std),
        fold_scores=tuple(tuple(float(sgn * v) for v in row) for row in at),
        best_alpha=alphas[best], scoring=scoring, rule=rule, n_folds=int(n_folds), n_samples=int(n),
        intercept_scale=float(gammas[gi]), intercept_scales=tuple(float(v) for v in gammas),
        mean_by_intercept_scale=tuple(tuple(float(sgn * v) for v in row) for row in cell_mean),
    )
    log.info("ridge_cv: alpha=%.4g (relative %.3g) by %s, held-out %s %.4f (best %.4f at alpha=%.4g)",
             res.alpha, res.relative_alpha, rule, scoring, res.mean[pick], res.mean[best], res.best_alpha)
    return res


def _curve(P, B, evals, my, Yv, grid, lam_bar, scoring, gv, gammas) -> np.ndarray:
    out = np.empty((len(grid), len(gammas)))
    for j, r in enumerate(grid):
        out[j] = _scores((P * _shrink(evals, r * lam_bar)) @ B, my, Yv, scoring, gv, gammas)
    return out


def _full_mean_eigenvalue(X, center: bool, dev) -> float:
    """Mean non-zero eigenvalue of the full data's (centred) X^T X: its trace over min(n - center, d)."""
    import torch

    n, dx = X.shape
    sx = torch.zeros(dx, dtype=torch.float64, device=dev)
    sq = 0.0
    for s in range(0, n, CHUNK):
        xc = _rows(X, slice(s, s + CHUNK), dev)
        sx += xc.sum(0)
        sq += float((xc * xc).sum())
    trace = sq - (float(sx @ sx) / n if center else 0.0)
    return _mean_eigenvalue(trace, min(n - int(center), dx))
