r"""Orthogonal Procrustes with one canonical answer when the data do not determine it.

The map maximises :math:`\operatorname{tr}(W^\top M)` for the cross-covariance :math:`M = X^\top Y` (``(d_x, d_y)``),
over semi-orthogonal ``W`` (:math:`W^\top W = I` when :math:`d_x \ge d_y`, :math:`W W^\top = I` otherwise). With
the thin SVD :math:`M = U_r \Sigma_r V_r^\top` of rank ``r`` (singular values above ``rtol * sigma_max``), every
maximiser has the form

.. math:: W = U_r V_r^\top + U_\perp R\, V_\perp^\top,

where :math:`U_\perp` (``(d_x, d_x - r)``) and :math:`V_\perp` (``(d_y, d_y - r)``) are orthonormal bases of the
complements of the column and row spaces of ``M`` and ``R`` is any semi-orthogonal ``(d_x - r, d_y - r)`` matrix.
When :math:`r = \min(d_x, d_y)` the maximiser is unique (:math:`W = U V^\top`, even with repeated singular values).
When :math:`r` is smaller — fewer known pairs than dimensions, or a rank-deficient cross-covariance — the data say
nothing about ``R``, and a bare SVD returns whatever null-space basis its LAPACK path, thread count and input happen
to give. Two canonical choices, both independent of the bases picked for the complements:

- ``complete="zero"``: :math:`W_0 = U_r V_r^\top = (M M^\top)^{+1/2} M`, the partial isometry of ``M``'s polar
  decomposition. Among the maximisers of :math:`\operatorname{tr}(W^\top M)` over the spectral-norm ball
  :math:`\lVert W\rVert_2 \le 1` (the convex hull of the semi-orthogonal maps) it is the one of minimum Frobenius
  norm: it maps exactly the directions the pairs determine and sends the rest to zero. Not orthogonal when
  :math:`r < \min(d_x, d_y)`.
- ``complete="identity"``: the semi-orthogonal maximiser nearest to the (rectangular) identity :math:`E`,
  :math:`\min_R \lVert W - E\rVert_F`, i.e. :math:`R = \operatorname{polar}(U_\perp^\top E V_\perp)` and
  :math:`W = W_0 + \operatorname{polar}\big((I - U_r U_r^\top) E (I - V_r V_r^\top)\big)`. "Leave the undetermined
  directions where they are": right when both spaces share coordinates; otherwise still canonical.

Both are continuous in ``M`` away from the rank threshold, so 1 and 2 threads, numpy and torch, and repeated calls
give the same map up to rounding (about 1e-15), instead of unrelated rotations of the null space.
"""
from __future__ import annotations

import warnings
from typing import Any

__all__ = ["procrustes_map", "svd", "RANK_RTOL"]

#: Singular values at or below ``RANK_RTOL * sigma_max`` count as zero: far above the rounding (about 1e-16 relative)
#: of exactly rank-deficient cross-covariances, far below any direction the data actually determine.
RANK_RTOL = 1e-10


def svd(A: Any, *, full_matrices: bool = False) -> tuple[Any, Any, Any]:
    """``torch.linalg.svd(A)``, falling back to LAPACK's ``gesvd`` (scipy, float64, CPU) when the default divide and
    conquer driver fails to converge. ``gesdd`` does fail on some well-scaled matrices with many repeated singular
    values, at one thread count and not another (a 898 x 898 complement in the full demo, 1 thread); ``gesvd`` is
    slower and robust. The factors come back in ``A``'s dtype and device."""
    import torch

    try:
        return torch.linalg.svd(A, full_matrices=full_matrices)
    except torch.linalg.LinAlgError:
        import scipy.linalg

        a = A.detach().to("cpu", torch.float64).numpy()
        factors = scipy.linalg.svd(a, full_matrices=full_matrices, lapack_driver="gesvd")
        return tuple(torch.from_numpy(f).to(device=A.device, dtype=A.dtype) for f in factors)


def procrustes_map(M: Any, *, complete: str = "zero", rtol: float = RANK_RTOL, warn: bool = True,
                   what: str = "procrustes", needed_rank: int | None = None) -> tuple[Any, int]:
    r"""The canonical maximiser ``W`` of :math:`\operatorname{tr}(W^\top M)` over semi-orthogonal maps, and ``rank``.

    Parameters
    ----------
    M : torch tensor of shape (d_x, d_y)
        Cross-covariance :math:`X_s^\top Y_s` (computed in float64 by the callers).
    complete : {"zero", "identity"}
        What the map does on the directions ``M`` does not determine (see the module docstring).
    rtol : float
        Relative threshold on singular values for the rank.
    warn : bool
        Emit one ``UserWarning`` when the map is not unique (rank below ``min(d_x, d_y)``).
    what : str
        Name used in the warning.
    needed_rank : int, optional
        Rank below which the warning fires (default ``min(d_x, d_y)``); a caller that zero-pads ``M`` to a square
        matrix passes the unpadded ``min(d_x, d_y)``, since the padded directions are never used.

    Returns
    -------
    W : torch tensor of shape (d_x, d_y), same dtype and device as ``M``
    rank : int
        Numerical rank ``r`` of ``M``; the map is unique iff ``r == min(d_x, d_y)``.
    """
    import torch

    if complete not in ("zero", "identity"):
        raise ValueError(f"`complete` must be 'zero' or 'identity', got {complete!r}")
    dx, dy = M.shape
    k = min(dx, dy)
    if k == 0:
        return M.new_zeros((dx, dy)), 0
    full = complete == "identity"
    U, S, Vh = svd(M, full_matrices=full)
    smax = float(S[0]) if S.numel() else 0.0
    r = int((S > rtol * smax).sum()) if smax > 0 else 0
    W = U[:, :r] @ Vh[:r]
    need = k if needed_rank is None else min(int(needed_rank), k)
    if r < k:
        if warn and r < need:
            warnings.warn(f"{what}: the cross-covariance has rank {r} < {need} (fewer independent known pairs than "
                          f"dimensions), so the map is not unique; the {need - r} undetermined directions are "
                          f"{'sent to zero' if complete == 'zero' else 'kept nearest to the identity'}",
                          UserWarning, stacklevel=3)
        if full:
            Up, Vp = U[:, r:], Vh[r:].T  # (dx, dx - r), (dy, dy - r)
            E = torch.eye(dx, dy, dtype=M.dtype, device=M.device)
            N = Up.T @ E @ Vp
            a, _, bt = svd(N)
            W = W + Up @ (a @ bt) @ Vp.T
    return W, r
