"""Nearest-neighbour measures of Huh et al. (2024, "The Platonic Representation Hypothesis"): mutual k-NN, CKNNA
and cycle k-NN, with the k nearest neighbours found in row blocks (``b × n`` similarities at a time).

Neighbours are ranked by the inner product of the rows, after L2-normalising them when ``normalize=True`` (the
default, as the Platonic code does before measuring), i.e. by cosine similarity. An item is never its own neighbour.
"""
from __future__ import annotations

import numpy as np

from ._common import U32, block_rows, check_batch_size, cka_ratio, iter_chunks, load64


def nearest_neighbors(X, k: int = 10, *, normalize: bool = True, batch_size=None, device=None):
    """The k nearest other rows of each row of ``X`` (n, d): the neighbour lists behind ``mutual_knn``, ``cknna``
    and ``cycle_knn``, e.g. to see *which* items two encoders agree on (``|N_X(i) ∩ N_Y(i)| / k`` per item).

    Neighbours rank by inner product, after L2-normalising the rows when ``normalize=True`` (cosine similarity);
    an item is never its own neighbour. The sets are exact (those of float64 arithmetic: float32 blocks, rows near
    a tie decided again in float64); within a row the order is by similarity, ties in any order.

    Parameters
    ----------
    X : array-like or torch.Tensor, shape (n, d)
    k : int, default 10
        Neighbours per row, ``1 <= k < n``.
    normalize : bool, default True
    batch_size : int, optional
        Rows per block (default about 16 MB of float32 similarities); never changes the sets.
    device : str or torch.device, optional
        Where to compute (default: the input's device, CPU for numpy).

    Returns
    -------
    ndarray of shape (n, k), int64, or a torch long tensor on the compute device for a tensor input

    Raises
    ------
    ValueError
        ``k >= n``, NaN / inf or constant rows, an all-zero row with ``normalize=True``.
    """
    from .._backend import resolve_device
    from .._validation import check_array, check_int, is_torch

    X = check_array(X, "X", allow_nan=True)
    k = check_int("k", k, min_value=1)
    batch_size = check_batch_size(batch_size)
    _check_k(k, X.shape[0])
    dev = "cpu" if device is None and not is_torch(X) else resolve_device(device, X)
    import torch

    with torch.no_grad():
        idx = knn(_features(X, dev, batch_size, bool(normalize), "X"), k, batch_size)[0]
    return idx if is_torch(X) else idx.cpu().numpy()


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


def knn(Z, k: int, batch_size, *, values: bool = False):
    """Indices ``(n, k)`` of each row's k nearest other rows and, with ``values=True``, their float64 inner products
    ``(n, k)`` (else None).

    The similarities are computed in float32 (half the time of float64), one square block per pair of row blocks
    (the matrix is symmetric: a block serves its rows and, transposed, its columns), each block's top k + 1 merged
    into a running top list per row. The float32 error is bounded: for rows x, y of ``Z`` (float64),
    ``|fl32(x . y) - x . y| <= tol = (d + 2) u ||x|| ||y|| / (1 - (d + 2) u)`` (u = 2^-24: rounding each entry to
    float32, then the float32 dot product; Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed.,
    §3.1), plus a margin for float32 subnormals. A row whose k-th and (k+1)-th float32 similarities are more than
    ``2 tol`` apart has the same k neighbours as in exact arithmetic (every other row scores at least that gap
    lower); only the rows within ``2 tol`` of a tie are recomputed in float64, exactly as :func:`knn_float64` does,
    so the neighbour sets are those of the float64 computation. Inputs whose magnitudes float32 cannot hold go to
    :func:`knn_float64` whole. The order of a row's k neighbours is by float32 similarity (the metrics use sets).
    """
    import torch

    n, d = Z.shape
    kk = k + 1 if k + 1 <= n - 1 else k  # the (k+1)-th candidate decides whether the k-th is certain
    norms = Z.norm(dim=1)
    top = float(norms.max()) if n else 0.0
    if not (1e-15 <= top <= 1e15) or (d + 2) * U32 >= 0.01:
        idx, val = knn_float64(Z, k, batch_size)
        return idx, (val if values else None)
    Z32 = Z.to(torch.float32)
    tiny = 2.0**-149 * d * (2.0 * top + 1.0)  # float32 subnormals: absolute error of the entries and products
    tol = (d + 2) * U32 / (1.0 - (d + 2) * U32) * norms * top + tiny
    best_v = torch.full((n, kk), -torch.inf, dtype=torch.float32, device=Z.device)
    best_i = torch.zeros((n, kk), dtype=torch.long, device=Z.device)

    def merge(s, e, v, i):
        """Fold candidates ``(v, i)`` of rows ``s:e`` into their running top ``kk``."""
        cv = torch.cat((best_v[s:e], v), 1)
        ci = torch.cat((best_i[s:e], i), 1)
        v2, j = torch.topk(cv, kk, dim=1)
        best_v[s:e], best_i[s:e] = v2, ci.gather(1, j)

    side = batch_size or max(1, min(n, SIDE))
    blocks = list(iter_chunks(n, side))
    for a, (s, e) in enumerate(blocks):
        for t, u in blocks[a:]:
            S = Z32[s:e] @ Z32[t:u].T
            if t == s:
                S.fill_diagonal_(-torch.inf)  # an item is never its own neighbour
            v, i = _top(S, min(kk, u - t))
            merge(s, e, v, i + t)
            if t != s:
                v, i = _top(S.T, min(kk, e - s))
                merge(t, u, v, i + s)
    idx = best_i[:, :k].contiguous()
    if kk > k:
        gap = best_v[:, k - 1].double() - best_v[:, k].double()
        unsure = torch.nonzero(gap <= 2.0 * tol)[:, 0]
        for c0, c1 in iter_chunks(unsure.numel(), block_rows(n, batch_size)):
            rows = unsure[c0:c1]  # near a tie: the float64 rows decide, as in knn_float64
            S64 = Z[rows] @ Z.T
            S64[torch.arange(rows.numel(), device=Z.device), rows] = -torch.inf
            idx[rows] = torch.topk(S64, k, dim=1)[1]
    if not values:
        return idx, None
    val = torch.empty((n, k), dtype=torch.float64, device=Z.device)
    # rows per chunk: the gathered (b, k, d) neighbour rows stay near VALUE_BYTES (cache-sized; 2,048-row chunks
    # were 4x slower at n = 10,000, k = 10, d = 384 on one core); the values do not depend on it
    rows = max(1, min(block_rows(n, batch_size), VALUE_BYTES // (8 * k * max(d, 1))))
    for s, e in iter_chunks(n, rows):
        val[s:e] = torch.einsum("bd,bkd->bk", Z[s:e], Z[idx[s:e]])
    return idx, val


# Rows (= columns) of one float32 similarity block: 16 MB; faster than 4,096-row blocks on one core (see
# benchmarks/README.md, "## similarity").
SIDE = 2048
# Bytes of gathered neighbour rows per chunk when knn computes their float64 inner products.
VALUE_BYTES = 8 * 2**20
# Candidates per group in _top: the largest of GROUP entries is found by one vectorised pass, then top-m runs on
# the group maxima only.
GROUP = 8


def _top(S, m: int):
    """Candidates (values, column indices) that contain ``torch.topk(S, m, dim=1)``: at most ``m * GROUP`` plus
    the ragged tail per row (S is a block or the transpose of one); the top m are selected by the caller's merge.

    The columns are split into groups of ``GROUP`` (column c in group c mod q); one pass takes each group's
    maximum, the top m groups are found among the maxima, and top m among their members. Exact: each of the top m
    entries lies in a group whose maximum is at least that entry, and fewer than m groups can have a larger
    maximum. Entries tied in value may be chosen differently from ``torch.topk``; :func:`knn` re-decides every
    row whose k-th and (k+1)-th values are near a tie in float64.
    """
    import torch

    b, w = S.shape
    q = w // GROUP
    if q < 4 * m:
        return torch.topk(S, m, dim=1)
    if S.stride(1) == 1:  # rows contiguous: groups of columns {c, c + q, ...}, maxima over the middle axis
        main = S.as_strided((b, GROUP, q), (S.stride(0), q, 1))
        gmax = main.amax(1)  # (b, q)
        gi = torch.topk(gmax, m, dim=1)[1]
    else:  # the transpose of a contiguous block: the same groups, reduced along the block's rows
        T = S.T  # (w, b) contiguous
        main = T.as_strided((GROUP, q, b), (q * T.stride(0), T.stride(0), 1))
        gmax = main.amax(0)  # (q, b)
        gi = torch.topk(gmax, m, dim=0)[1].T  # (b, m)
    cols = (gi[:, :, None] + q * torch.arange(GROUP, device=S.device)).reshape(b, m * GROUP)
    if q * GROUP < w:
        cols = torch.cat((cols, torch.arange(q * GROUP, w, device=S.device).expand(b, -1)), 1)
    return S.gather(1, cols), cols  # a superset of the top m; the caller's merge selects from it


def knn_float64(Z, k: int, batch_size):
    """:func:`knn` with every similarity in float64 (the reference; also used where float32 cannot hold ``Z``)."""
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
    ix, vx = knn(_features(X, device, batch_size, normalize, "X"), k, batch_size, values=True)
    iy, vy = knn(_features(Y, device, batch_size, normalize, "Y"), k, batch_size, values=True)
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
