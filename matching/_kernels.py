"""Kernel (similarity) matrices over one set of items, the input of the structural matchers."""
from __future__ import annotations

from typing import Any

from align._validation import check_choice

__all__ = ["KERNELS", "kernel_matrix"]

KERNELS = ("linear", "cosine", "rbf", "centered_rbf")


def _centre(X):
    return X - X.mean(dim=0, keepdim=True)


def _unit_rows(X):
    import torch

    norms = torch.linalg.vector_norm(X, dim=1, keepdim=True)
    return X / torch.clamp(norms, min=torch.finfo(X.dtype).tiny)


def kernel_factor(X, kernel: str):
    """``F`` with ``K = F F^T`` for the low-rank kernels (``linear``, ``cosine``); ``None`` for the RBF ones."""
    if kernel == "linear":
        return X
    if kernel == "cosine":
        return _unit_rows(_centre(X))
    return None


def _sq_dists(X):
    import torch

    sq = (X * X).sum(dim=1)
    D2 = sq[:, None] + sq[None, :] - 2.0 * (X @ X.T)
    D2.fill_diagonal_(0.0)
    return torch.clamp(D2, min=0.0)


def _rbf(X):
    import torch

    D2 = _sq_dists(X)
    n = D2.shape[0]
    off = D2[~torch.eye(n, dtype=torch.bool, device=D2.device)]
    sigma2 = torch.median(off) if off.numel() else torch.tensor(1.0, dtype=X.dtype)
    if not float(sigma2) > 0:
        sigma2 = torch.tensor(1.0, dtype=X.dtype, device=X.device)
    return torch.exp(-D2 / (2.0 * sigma2))


def kernel_matrix(X: Any, kernel: str = "cosine", *, dtype: Any = None, device: Any = None):
    r"""The ``(n, n)`` kernel matrix of the rows of ``X`` (a torch tensor, float64 unless ``dtype`` says otherwise).

    Parameters
    ----------
    X : array or tensor of shape (n, d)
    kernel : {"linear", "cosine", "rbf", "centered_rbf"}
        - ``"linear"``: :math:`K = X X^\top`.
        - ``"cosine"``: centred cosine, :math:`K_{ij} = \cos(x_i - \bar x, x_j - \bar x)`; the columns are centred
          over the ``n`` items, then rows are scaled to unit norm. The default of the matchers: it removes the
          offset and scale that differ between two encoders.
        - ``"rbf"``: :math:`K_{ij} = \exp(-\lVert x_i - x_j\rVert^2 / 2\sigma^2)` with :math:`\sigma^2` the median
          squared pairwise distance (the median heuristic).
        - ``"centered_rbf"``: the RBF kernel above, double-centred (:math:`HKH`, computed by subtracting row, column
          and grand means) and scaled to unit Frobenius norm, as in the centred kernels of Maniparambil et al.
          (CVPR 2024).

    Notes
    -----
    ``linear`` and ``cosine`` are ``F F^T`` for an ``(n, d)`` factor, which the FAQ solver uses to compute its
    gradient in :math:`O(n^2 d)` instead of :math:`O(n^3)`. The RBF kernels cost :math:`O(n^2 d)` to build and
    :math:`O(n^2)` memory.
    """
    import torch

    from align._backend import as_torch

    check_choice("kernel", kernel, KERNELS)
    X = as_torch(X, device=device, dtype=dtype or torch.float64)
    if kernel in ("linear", "cosine"):
        F = kernel_factor(X, kernel)
        K = F @ F.T
        return (K + K.T) / 2
    K = _rbf(X)
    if kernel == "centered_rbf":
        K = K - K.mean(dim=0, keepdim=True) - K.mean(dim=1, keepdim=True) + K.mean()
        norm = torch.linalg.matrix_norm(K)
        if float(norm) > 0:
            K = K / norm
    # symmetrise last: (K + K^T) / 2 is exactly symmetric (floating-point addition commutes), and FAQ takes its
    # one-product symmetric path only for exactly symmetric matrices; any step after it (centring) would break that
    return (K + K.T) / 2
