"""Matchers that use the known pairs as anchors: Procrustes, least squares, relative representations, ASIF."""
from __future__ import annotations

from typing import Any

import numpy as np

from align._procrustes import procrustes_map
from align._validation import check_float, check_int

from ._assign import assign
from ._result import MatchResult

__all__ = ["procrustes", "lstsq", "relative", "asif"]


def _prep(X, Y, device, centre: bool = True):
    import torch

    from align._backend import as_torch, resolve_device

    from ._kernels import kernel_factor

    dev = resolve_device(device, X, Y)
    Xt = as_torch(X, device=dev, dtype=torch.float64)
    Yt = as_torch(Y, device=dev, dtype=torch.float64)
    if not centre:
        return _unit(Xt), _unit(Yt)
    return kernel_factor(Xt, "cosine"), kernel_factor(Yt, "cosine")


def _unit(Z):
    import torch

    return Z / torch.clamp(torch.linalg.vector_norm(Z, dim=1, keepdim=True), min=1e-300)


def _fit_and_score(Xn, Yn, pairs: np.ndarray, fit) -> Any:
    import torch

    ix = torch.from_numpy(pairs[:, 0]).to(Xn.device)
    iy = torch.from_numpy(pairs[:, 1]).to(Xn.device)
    W = fit(Xn[ix], Yn[iy])
    return _unit(Xn @ W) @ Yn.T


def _refined(X, Y, seeds, fit, n_refine: int, device, name: str) -> MatchResult:
    Xn, Yn = _prep(X, Y, device)
    result = assign(_fit_and_score(Xn, Yn, seeds, fit), seeds, name)
    for it in range(n_refine):
        matched = np.flatnonzero(result.col_ind >= 0)
        pairs = np.stack([matched, result.col_ind[matched]], axis=1)
        new = assign(_fit_and_score(Xn, Yn, pairs, fit), seeds, name, n_iter=it + 1)
        if np.array_equal(new.col_ind, result.col_ind):
            return new
        result = new
    return MatchResult(col_ind=result.col_ind, score=result.score, n_iter=n_refine, converged=n_refine == 0,
                       method=name, similarity=result.similarity)


def procrustes(X: Any, Y: Any, partial_match: np.ndarray, *, n_refine: int = 0, device: Any = None) -> MatchResult:
    r"""Orthogonal Procrustes from the known pairs, then a linear assignment of the rest (Maiorca et al. 2023).

    Both spaces are centred over all their items and rows scaled to unit norm; the map is

    .. math:: W = \arg\min_{W^\top W = I} \lVert X_s W - Y_s\rVert_F = U V^\top,\quad U\Sigma V^\top = X_s^\top Y_s,

    (a semi-orthogonal ``(d_x, d_y)`` map when the widths differ), and pairs are scored by
    :math:`\cos(x_i W, y_j)`. With fewer independent known pairs than dimensions (rank of :math:`X_s^\top Y_s`
    below :math:`\min(d_x, d_y)`) the maximiser is not unique: the map is then the canonical one that sends the
    undetermined directions to zero, :math:`W = U_r V_r^\top` over the ``r`` non-zero singular values (the polar
    factor of :math:`X_s^\top Y_s`; see :mod:`align._procrustes`), the same for any thread count and backend, and a
    ``UserWarning`` says so. ``n_refine`` rounds of fit → assign → refit on all matched pairs (stops early when
    the matching no longer changes). Needs at least 2 known pairs.
    """

    n_refine = check_int("n_refine", n_refine, min_value=0)

    def fit(Xs, Ys):
        return procrustes_map(Xs.T @ Ys, complete="zero", what="procrustes")[0]

    return _refined(X, Y, partial_match, fit, n_refine, device, "procrustes")


def lstsq(X: Any, Y: Any, partial_match: np.ndarray, *, alpha: float | str = "auto", n_refine: int = 0,
          device: Any = None) -> MatchResult:
    r"""Ridge least squares from the known pairs, then a linear assignment of the rest.

    .. math:: W = \arg\min_W \lVert X_s W - Y_s\rVert_F^2 + \alpha \lVert W\rVert_F^2
              = X_s^\top (X_s X_s^\top + \alpha I)^{-1} Y_s

    on centred, unit-norm rows (the dual form when there are fewer pairs than dimensions); pairs are scored by
    :math:`\cos(x_i W, y_j)`. ``alpha="auto"`` (default) chooses the penalty by k-fold validation of held-out
    retrieval R@1 among the known pairs (:func:`align._ridge.ridge_cv`: a grid relative to the spectrum that
    includes 0, the smallest penalty within one standard error of the best), again at every refinement round; a
    number is used as given (0: the minimum-norm least-squares map, defined with fewer pairs than dimensions).
    With fewer than 4 known pairs ``"auto"`` uses 0. The chosen penalties are logged (``logging``, INFO).
    """
    import logging

    from align._ridge import ridge_cv, ridge_fit

    auto = isinstance(alpha, str)
    if auto:
        from align._validation import check_choice

        check_choice("alpha", alpha, ("auto",))
    else:
        alpha = check_float("alpha", alpha, min_value=0.0)
    n_refine = check_int("n_refine", n_refine, min_value=0)
    chosen: list[float] = []

    def fit(Xs, Ys):
        a = alpha
        if auto:
            a = ridge_cv(Xs, Ys, fit_intercept=False, rng=0).alpha if len(Xs) >= 4 else 0.0
        chosen.append(float(a))
        W, _ = ridge_fit(Xs, Ys, alpha=float(a), fit_intercept=False)
        return W

    result = _refined(X, Y, partial_match, fit, n_refine, device, "lstsq")
    logging.getLogger(__name__).info("lstsq: ridge alpha %s", ", ".join(f"{a:.4g}" for a in chosen))
    return result


def _relative_reps(Xn, anchors: np.ndarray):
    import torch

    A = Xn[torch.from_numpy(anchors).to(Xn.device)]
    return _unit(Xn) @ _unit(A).T


def relative(X: Any, Y: Any, partial_match: np.ndarray, *, device: Any = None) -> MatchResult:
    r"""Relative representations over the known pairs as anchors (Moschella et al., ICLR 2023).

    Each item becomes its vector of cosine similarities to the ``k`` anchors of its own space,
    :math:`r(x) = (\cos(x, a_1), \dots, \cos(x, a_k))` (centred features); anchor ``t`` of ``X`` and anchor ``t`` of
    ``Y`` are the same item, so the two ``k``-dimensional spaces are comparable. Pairs are scored by
    :math:`\cos(r(x_i), r(y_j))`, then assigned.
    """
    Xn, Yn = _prep(X, Y, device)
    Rx = _unit(_relative_reps(Xn, partial_match[:, 0]))
    Ry = _unit(_relative_reps(Yn, partial_match[:, 1]))
    return assign(Rx @ Ry.T, partial_match, "relative")


def asif(X: Any, Y: Any, partial_match: np.ndarray, *, topk: int | None = None, power: float = 1.0,
         device: Any = None) -> MatchResult:
    r"""ASIF (Norelli et al., NeurIPS 2023): relative representations over the anchors, sparsified and sharpened.

    As in the paper (and its code), features are *not* centred: rows are scaled to unit norm and each item becomes
    its vector of cosine similarities to the ``k`` anchors of its own space. Each vector keeps its ``topk`` largest
    entries (the rest set to 0), raised to ``power`` (ASIF's ``p``) with their sign kept,
    :math:`s \mapsto \operatorname{sign}(s)\,|s|^p`, and is rescaled to unit norm; pairs are scored by the inner
    product, then assigned.

    Parameters
    ----------
    topk : int or None, default None
        Entries kept per item: ``min(topk, k)``; ``None`` keeps all ``k`` anchors (dense).
    power : float, default 1
        Exponent ``p`` applied to the kept similarities.

    Notes
    -----
    The defaults (all anchors, ``p = 1``) are the measured best with 30 known pairs (``benchmarks/README.md``,
    "Matching defaults": Multi30k captions, 100 and 300 items, within 0.013 of :func:`relative`, which is ASIF's
    dense ``p = 1`` case on centred features). The paper's setting (``topk = 800``, ``p = 8``) is for very large
    anchor sets (1.6M image-text pairs); with few anchors, truncating and sharpening leave each item described by
    a handful of anchors and lose accuracy (``topk=10, power=8`` on centred features, the old default: 0.29
    against 0.92 at 30 anchors). With 1,000 anchors ``power=2`` measured better than 1 (0.991 against 0.969).
    """
    import torch

    topk = None if topk is None else check_int("topk", topk, min_value=1)
    power = check_float("power", power, min_value=0.0, inclusive=False)
    Xn, Yn = _prep(X, Y, device, centre=False)

    def sparse(R):
        signed_power = lambda v: v if power == 1.0 else torch.sign(v) * v.abs() ** power  # noqa: E731
        if topk is None or topk >= R.shape[1]:  # dense: nothing to drop
            return _unit(signed_power(R))
        vals, idx = torch.topk(R, topk, dim=1)
        return _unit(torch.zeros_like(R).scatter_(1, idx, signed_power(vals)))

    Rx = sparse(_relative_reps(Xn, partial_match[:, 0]))
    Ry = sparse(_relative_reps(Yn, partial_match[:, 1]))
    return assign(Rx @ Ry.T, partial_match, "asif")
