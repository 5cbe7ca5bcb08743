"""Nearest-neighbour measures of Huh et al. (2024, "The Platonic Representation Hypothesis"): mutual k-NN, CKNNA
and cycle k-NN, with the k nearest neighbours found in row blocks (``b × n`` similarities at a time).

Neighbours are ranked by the inner product of the rows, after L2-normalising them when ``normalize=True`` (the
default, as the Platonic code does before measuring), i.e. by cosine similarity. An item is never its own neighbour.
"""
from __future__ import annotations

import numpy as np

from ._common import cka_ratio, iter_chunks, load64
from ._kernel import block_rows


def _features(X, device, batch_size, normalize: bool, name: str):
    import torch

    Z = load64(X, device, batch_size, check=name)
    if normalize:
        norms = Z.norm(dim=1, keepdim=True)
        if bool((norms == 0).any()):
            i = int(torch.nonzero(norms[:, 0] == 0)[0])
            raise ValueError(
                f"`{name}` has an all-zero row ({i}) that cannot be L2-normalised; drop it or pass normalize=False"
            )
        Z = Z / norms
    return Z


def knn(Z, k: int, batch_size):
    """Indices ``(n, k)`` and inner products ``(n, k)`` of each row's k nearest other rows (largest first)."""
    import torch

    n = Z.shape[0]
    idx = torch.empty((n, k), dtype=torch.long, device=Z.device)
    val = torch.empty((n, k), dtype=torch.float64, device=Z.device)
    for s, e in iter_chunks(n, block_rows(n, batch_size)):
        S = Z[s:e] @ Z.T
        r = torch.arange(e - s, device=Z.device)
        S[r, r + s] = -torch.inf
        v, i = torch.topk(S, k, dim=1)
        idx[s:e], val[s:e] = i, v
    return idx, val


def _check_k(k: int, n: int, *, minimum: int = 1) -> None:
    if k >= n:
        raise ValueError(
            f"`k` must be < n_samples = {n} (an item is never its own neighbour, so it has n - 1 = {n - 1} "
            f"candidates), got k = {k}; pass k <= {n - 1} or use more items"
        )
    if k < minimum:
        raise ValueError(f"`k` must be >= {minimum}, got {k}")


def mutual_knn_value(X, Y, device, *, k: int, normalize: bool, batch_size) -> tuple[float, dict]:
    """Mean over items of :math:`|N_k^X(i) \\cap N_k^Y(i)| / k`."""
    n = X.shape[0]
    _check_k(k, n)
    ix, _ = knn(_features(X, device, batch_size, normalize, "X"), k, batch_size)
    iy, _ = knn(_features(Y, device, batch_size, normalize, "Y"), k, batch_size)
    hits = (ix[:, :, None] == iy[:, None, :]).any(2).sum(1)
    return float(hits.double().mean() / k), {"k": k, "normalize": normalize}


def cycle_knn_value(X, Y, device, *, k: int, normalize: bool, batch_size) -> tuple[float, dict]:
    """Fraction of items i that some neighbour-in-X of some neighbour-in-Y of i leads back to (not symmetric)."""
    import torch

    n = X.shape[0]
    _check_k(k, n)
    ix, _ = knn(_features(X, device, batch_size, normalize, "X"), k, batch_size)
    iy, _ = knn(_features(Y, device, batch_size, normalize, "Y"), k, batch_size)
    back = ix[iy]  # (n, k, k): X-neighbours of each Y-neighbour of i
    home = torch.arange(n, device=ix.device)[:, None, None]
    return float((back == home).flatten(1).any(1).double().mean()), {"k": k, "normalize": normalize}


def _masked_hsic_u(rows, cols, a, b, n: int) -> float:
    """Song et al.'s unbiased HSIC of two sparse n × n matrices A, B sharing the pattern (rows, cols), zero
    diagonal, exactly as the Platonic code evaluates ``hsic_unbiased(mask * K, mask * L)``::

        (sum(A * B.T) + sum(A) sum(B) / ((n-1)(n-2)) - 2 sum(A @ B) / (n-2)) / (n (n-3))
    """
    import scipy.sparse as sp

    A = sp.csr_matrix((a, (rows, cols)), shape=(n, n))
    B = sp.csr_matrix((b, (rows, cols)), shape=(n, n))
    t1 = float(A.multiply(B.T).sum())
    t2 = float(A.sum()) * float(B.sum()) / ((n - 1) * (n - 2))
    t3 = 2.0 * float(np.asarray(A.sum(0)).ravel() @ np.asarray(B.sum(1)).ravel()) / (n - 2)
    return (t1 + t2 - t3) / (n * (n - 3))


def cknna_value(X, Y, device, *, k: int, normalize: bool, batch_size) -> tuple[float, dict]:
    """CKNNA: unbiased CKA restricted to pairs that are k-nearest neighbours in both representations."""
    n = X.shape[0]
    _check_k(k, n, minimum=2)
    ix, vx = knn(_features(X, device, batch_size, normalize, "X"), k, batch_size)
    iy, vy = knn(_features(Y, device, batch_size, normalize, "Y"), k, batch_size)
    ix, vx, iy, vy = (t.cpu().numpy() for t in (ix, vx, iy, vy))
    rows = np.repeat(np.arange(n), k)

    def pattern(ia, va, ib, vb):
        """Entries (i, j) with j among both row i's neighbour lists; values of both kernels there."""
        ka = rows * n + ia.ravel()
        kb = rows * n + ib.ravel()
        order = np.argsort(kb)
        pos = np.searchsorted(kb[order], ka).clip(max=kb.size - 1)
        hit = kb[order][pos] == ka
        return ka[hit] // n, ka[hit] % n, va.ravel()[hit], vb.ravel()[order][pos][hit]

    r, c, a, b = pattern(ix, vx, iy, vy)
    h_xy = _masked_hsic_u(r, c, a, b, n)
    r, c, a, _ = pattern(ix, vx, ix, vx)
    h_xx = _masked_hsic_u(r, c, a, a, n)
    r, c, b, _ = pattern(iy, vy, iy, vy)
    h_yy = _masked_hsic_u(r, c, b, b, n)
    return cka_ratio(h_xy, h_xx, h_yy), {"k": k, "normalize": normalize}
