"""Seeded graph matching by FAQ (Frank–Wolfe on the relaxed QAP), restarts batched in torch."""
from __future__ import annotations

import logging
import math
from typing import Any, Optional

import numpy as np
from scipy.optimize import linear_sum_assignment

from align._validation import (check_array, check_choice, check_float, check_int, check_partial_match, check_rng,
                               is_torch)

from ._assign import assign_max_batch
from ._result import MatchResult

log = logging.getLogger(__name__)

__all__ = ["faq"]


class _Operand:
    """One side of the QAP: a dense square matrix, or a factor ``F`` with ``K = F F^T`` (never formed)."""

    def __init__(self, dense=None, factor=None):
        self.dense = dense
        self.factor = factor

    @property
    def n(self) -> int:
        return (self.dense if self.dense is not None else self.factor).shape[0]

    def padded(self, n: int) -> "_Operand":

        if self.n == n:
            return self
        if self.dense is not None:
            out = self.dense.new_zeros((n, n))
            out[: self.n, : self.n] = self.dense
            return _Operand(dense=out)
        out = self.factor.new_zeros((n, self.factor.shape[1]))
        out[: self.n] = self.factor
        return _Operand(factor=out)

    def reordered(self, order) -> "_Operand":
        if self.dense is not None:
            return _Operand(dense=self.dense[order][:, order])
        return _Operand(factor=self.factor[order])

    def is_symmetric(self) -> bool:
        import torch

        if self.factor is not None:
            return True
        return bool(torch.equal(self.dense, self.dense.T))


def _score(a: _Operand, b: _Operand, perm) -> float:
    """:math:`\\sum_{ik} A_{ik} B_{p_i p_k}` for one full permutation ``perm`` (a long tensor)."""
    if a.factor is not None:
        return float((a.factor.T @ b.factor[perm]).square().sum())
    return float((a.dense * b.dense[perm][:, perm]).sum())


class _Blocks:
    """The seed / non-seed blocks of both sides after seeds are moved first (Fishkind et al. 2019 notation)."""

    def __init__(self, a: _Operand, b: _Operand, s: int):
        self.s = s
        self.sym = a.is_symmetric() and b.is_symmetric()
        self.low_rank = a.factor is not None
        if self.low_rank:
            Fs, Fn = a.factor[:s], a.factor[s:]
            Gs, Gn = b.factor[:s], b.factor[s:]
            self.Fn, self.Gn = Fn, Gn
            # A21 B21^T + A12^T B12 = 2 Fn (Fs^T Gs) Gn^T
            self.C = 2.0 * (Fn @ (Fs.T @ Gs)) @ Gn.T
        else:
            A, B = a.dense, b.dense
            self.A22, self.B22 = A[s:, s:].contiguous(), B[s:, s:].contiguous()
            self.A22T, self.B22T = self.A22.T.contiguous(), self.B22.T.contiguous()  # row gathers stay contiguous
            self.C = A[s:, :s] @ B[s:, :s].T + A[:s, s:].T @ B[:s, s:]

    def prod(self, P):
        """:math:`A_{22} P B_{22}^\\top` for a batch ``P`` of shape (r, m, m)."""
        if self.low_rank:
            return self.Fn @ ((self.Fn.T @ P) @ self.Gn) @ self.Gn.T
        return self.A22 @ P @ self.B22.T

    def prod_t(self, P):
        """:math:`A_{22}^\\top P B_{22}` (equal to :meth:`prod` for symmetric sides)."""
        return self.A22T @ P @ self.B22

    def prod_perm(self, cols):
        """:math:`A_{22} Q B_{22}^\top` for permutations ``Q[i, cols[i]] = 1``: ``Q B^T`` is a row gather of ``B^T``,
        so this is one product (``O(m^3)``, or ``O(m^2 d)`` for factors) instead of two."""
        if self.low_rank:
            return self.Fn @ (self.Fn.T @ self.Gn[cols]) @ self.Gn.T
        return self.A22 @ self.B22T[cols]

    def prod_t_perm(self, cols):
        """:math:`A_{22}^\top Q B_{22}` for permutations (one product)."""
        return self.A22T @ self.B22[cols]

    def quad_perm(self, cols):
        """:math:`\\langle A_{22} Q B_{22}^\\top, Q\\rangle` for permutations ``Q[i, cols[i]] = 1``, batch (r, m)."""
        if self.low_rank:
            return (self.Fn.T @ self.Gn[cols]).square().sum(dim=(1, 2))
        r, m = cols.shape
        Bq = self.B22[cols].gather(2, cols[:, None, :].expand(r, m, m))  # B22[c_i, c_k]: a row gather, then columns
        return (self.A22 * Bq).sum(dim=(1, 2))


def _sinkhorn_max(grad, reg: float, max_iter: int, tol: float, cache_bytes: int = 1 << 22):
    r"""Doubly stochastic ``Q`` maximising :math:`\langle G, Q\rangle + H(Q)/\lambda`, one per problem of a batch.

    ``lambda = reg / max|G|`` per problem, as in graspologic's ``transport=True`` (GOAT, Saad-Eldin et al. 2021),
    which calls POT's ``sinkhorn(1, 1, G, -1 / lambda, stopThr=tol, numItermax=max_iter)``. This is the same
    Sinkhorn–Knopp iteration (POT's ``sinkhorn_knopp``): ``K = exp(lambda G)``, ``u = v = 1/m``, then
    ``v = 1 / (K^T u)``, ``u = 1 / (K v)``; every tenth iteration (0, 10, ...) it stops when the column sums of
    ``diag(u) K diag(v)`` are within ``tol`` (Euclidean norm) of 1. Each problem stops on its own: converged ones
    leave the batch. ``K`` is built from ``G - max G`` (the same plan: ``v`` absorbs the constant), so its entries
    lie in :math:`[e^{-2\,\mathrm{reg}}, 1]` and never overflow; a problem whose scalings still leave the floating-
    point range (``reg`` of several hundred in float64, or float32) is solved again by the same iteration in the
    log domain (:func:`_sinkhorn_max_log`), where POT would stop at its last finite iterate.

    On CPU the batch is cut into chunks of about ``cache_bytes`` of ``K``: the iteration is two matrix–vector
    products per step, bound by memory traffic, and a chunk that stays in cache runs several times faster.
    """
    r, m, _ = grad.shape
    if grad.device.type != "cpu":
        return _sinkhorn_knopp(grad, reg, max_iter, tol)
    step = max(1, cache_bytes // (m * m * grad.element_size()))
    if step >= r:
        return _sinkhorn_knopp(grad, reg, max_iter, tol)
    out = grad.new_empty(grad.shape)
    for lo in range(0, r, step):
        out[lo:lo + step] = _sinkhorn_knopp(grad[lo:lo + step], reg, max_iter, tol)
    return out


@np.errstate(all="ignore")  # inf / nan scalings are caught in the loop and solved again in the log domain
def _sinkhorn_knopp(grad, reg: float, max_iter: int, tol: float, use_numpy: bool | None = None):
    """:func:`_sinkhorn_max` on one chunk (matrix–vector products by numpy on CPU unless ``use_numpy=False``)."""
    import torch

    r, m, _ = grad.shape
    lam = reg / grad.abs().amax(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(grad.dtype).tiny)
    K = torch.exp((grad - grad.amax(dim=(1, 2), keepdim=True)) * lam)
    out = torch.empty_like(grad)
    alive = torch.arange(r, device=grad.device)
    failed = []
    if use_numpy is None:
        use_numpy = grad.device.type == "cpu"
    if use_numpy:  # numpy's batched matrix-vector products are ~5x faster than torch.bmm's on CPU
        def uK(u, K):
            return torch.from_numpy(np.matmul(u.numpy()[:, None, :], K.numpy())[:, 0])

        def Kv(K, v):
            return torch.from_numpy(np.matmul(K.numpy(), v.numpy()[:, :, None])[:, :, 0])
    else:
        def uK(u, K):
            return torch.bmm(u[:, None, :], K)[:, 0]

        def Kv(K, v):
            return torch.bmm(K, v[:, :, None])[:, :, 0]
    u = grad.new_full((r, m), 1.0 / m)
    Ktu = uK(u, K)
    for it in range(max_iter):
        v = Ktu.reciprocal()  # 1 / (K^T u)
        u = Kv(K, v).reciprocal_()  # 1 / (K v)
        Ktu = uK(u, K)  # the next step's K^T u, and the column sums v * K^T u of this step's plan
        if it % 10 and it != max_iter - 1:
            continue
        ok = (torch.isfinite(u).all(1) & torch.isfinite(v).all(1) & (u > 0).all(1) & (v > 0).all(1))
        err = torch.linalg.vector_norm(v * Ktu - 1.0, dim=1)
        leave = ~ok | (err < tol) if it != max_iter - 1 else torch.ones_like(ok)
        if not bool(leave.any()):
            continue
        done = leave & ok
        if bool(done.any()):
            out[alive[done]] = u[done][:, :, None] * K[done] * v[done][:, None, :]
        if not bool(ok.all()):
            failed.append(alive[~ok])
        keep = ~leave
        if not bool(keep.any()):
            break
        K, Ktu, alive = K[keep], Ktu[keep], alive[keep]
    if failed:
        idx = torch.cat(failed)
        out[idx] = _sinkhorn_max_log(grad[idx], reg, max_iter, tol)
    return out


def _sinkhorn_max_log(grad, reg: float, max_iter: int, tol: float):
    """:func:`_sinkhorn_max` in the log domain (the same iterates as ``log u``, ``log v``): the slow, safe fallback."""
    import torch

    r, m, _ = grad.shape
    lam = reg / grad.abs().amax(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(grad.dtype).tiny)
    logK = grad * lam
    f = grad.new_full((r, m), -math.log(m))
    g = grad.new_full((r, m), -math.log(m))
    out = torch.empty_like(grad)
    alive = torch.arange(r, device=grad.device)
    for it in range(max_iter):
        g = -torch.logsumexp(logK + f[:, :, None], dim=1)
        f = -torch.logsumexp(logK + g[:, None, :], dim=2)
        if it % 10 and it != max_iter - 1:
            continue
        cols = torch.exp(logK + f[:, :, None] + g[:, None, :]).sum(dim=1)
        leave = torch.linalg.vector_norm(cols - 1.0, dim=1) < tol
        if it == max_iter - 1:
            leave[:] = True
        if bool(leave.any()):
            out[alive[leave]] = torch.exp(logK[leave] + f[leave][:, :, None] + g[leave][:, None, :])
            keep = ~leave
            if not bool(keep.any()):
                break
            logK, f, g, alive = logK[keep], f[keep], g[keep], alive[keep]
    return out


def _random_doubly_stochastic(m: int, rng: np.random.Generator, tol: float = 1e-3, max_iter: int = 1000) -> np.ndarray:
    """Sinkhorn balancing of a uniform(0, 1) matrix (the "randomized" start of scipy and graspologic)."""
    K = rng.uniform(size=(m, m))
    for _ in range(max_iter):
        K = K / K.sum(axis=0, keepdims=True)
        K = K / K.sum(axis=1, keepdims=True)
        if np.abs(K.sum(axis=0) - 1).max() < tol:
            break
    return K


def _two_opt_delta(A: np.ndarray, Bp: np.ndarray) -> np.ndarray:
    """Change of :math:`\\sum_{ab} A_{ab} B_{p_a p_b}` for every transposition of ``p_i`` and ``p_j`` (n, n).

    ``Bp = B[p][:, p]``. Costs two n x n matrix products; equals the brute-force change (see the tests).
    """
    M = A @ Bp.T
    N = A.T @ Bp
    dM, dN, dA, dB = np.diag(M), np.diag(N), np.diag(A), np.diag(Bp)
    rows_all = M - dM[:, None] - dM[None, :] + M.T
    cols_all = N - dN[:, None] - dN[None, :] + N.T
    At, Bt = A.T, Bp.T
    rows_block = (dA[:, None] - At) * (Bt - dB[:, None]) + (A - dA[None, :]) * (dB[None, :] - Bp)
    cols_block = (dA[:, None] - A) * (Bp - dB[:, None]) + (At - dA[None, :]) * (dB[None, :] - Bt)
    exact_block = (dA[:, None] - dA[None, :]) * (dB[None, :] - dB[:, None]) + (A - At) * (Bt - Bp)
    return rows_all - rows_block + cols_all - cols_block + exact_block


def _two_opt(A: np.ndarray, B: np.ndarray, perm: np.ndarray, free: np.ndarray, max_iter: int) -> tuple[np.ndarray, int]:
    """Best-improvement 2-opt over the free rows: swap the pair with the largest gain until none gains."""
    perm = perm.copy()
    scale = max(float(np.abs(A).sum() * np.abs(B).max()), 1.0)
    mask = np.zeros((len(perm), len(perm)), dtype=bool)
    mask[np.ix_(free, free)] = True
    np.fill_diagonal(mask, False)
    for it in range(max_iter):
        delta = _two_opt_delta(A, B[perm][:, perm])
        delta[~mask] = -np.inf
        i, j = np.unravel_index(np.argmax(delta), delta.shape)
        if not delta[i, j] > 1e-12 * scale:
            return perm, it
        perm[i], perm[j] = perm[j], perm[i]
    return perm, max_iter


def _check_square(M: Any, name: str):
    M = check_array(M, name)
    if M.shape[0] != M.shape[1]:
        raise ValueError(
            f"`{name}` must be a square (n, n) matrix, got shape {tuple(M.shape)}; to match feature arrays use "
            "matching.match(X, Y, method='faq', kernel=...), which builds the kernels"
        )
    return M


# Entries of one (restarts, m, m) batch tensor: restarts run together until a batch holds about this many.
BATCH_ENTRIES = 10_000_000


def restart_batch(n_init: int, m: int) -> int:
    """Restarts per batch by default: as many as keep one ``(batch, m, m)`` tensor near :data:`BATCH_ENTRIES`."""
    return max(1, min(n_init, BATCH_ENTRIES // max(m * m, 1)))


def faq(
    A: Any,
    B: Any,
    partial_match: Any = None,
    *,
    n_init: int = 1,
    init: Any = "auto",
    max_iter: int = 30,
    tol: float = 0.03,
    transport: bool = False,
    transport_reg: float = 100.0,
    transport_max_iter: int = 1000,
    transport_tol: float = 0.05,
    two_opt: bool = False,
    two_opt_max_iter: int = 1000,
    batch_size: Optional[int] = None,
    device: Any = None,
    dtype: Any = None,
    rng: Any = None,
    _factors: Optional[tuple] = None,
) -> MatchResult:
    r"""Seeded graph matching: approximately maximise :math:`\mathrm{tr}(A P B^\top P^\top)` over permutations.

    FAQ (Vogelstein et al. 2015) with seeds (Fishkind et al. 2019): Frank–Wolfe on the doubly stochastic
    relaxation, then projection to the nearest permutation. With ``k`` seeds fixed and ``m = n - k`` free items,
    each iteration computes the gradient

    .. math:: \nabla f(P) = A_{21} B_{21}^\top + A_{12}^\top B_{12} + A_{22} P B_{22}^\top + A_{22}^\top P B_{22},

    solves a linear assignment problem on it (the direction ``Q``), and takes the exact line-search step along
    ``Q - P``. The QAP is NP-hard; results are approximations, and restarts help.

    Parameters
    ----------
    A : array or tensor of shape (n_a, n_a)
    B : array or tensor of shape (n_b, n_b)
        Square weight / kernel matrices. Unequal sizes are padded with zero rows and columns (isolated dummy
        nodes, graspologic's "naive" padding); items matched to a dummy come back as ``-1``. Zero is neutral only
        for zero-mean weights, such as centred kernels; centre positive weights first.
    partial_match : int array of shape (k, 2), optional
        Known pairs ``(i, j)``: row ``i`` of ``A`` is item ``j`` of ``B``. Any order.
    n_init : int, default 1
        Restarts, run together in batches (one tensor of shape ``(batch, m, m)``); the best by objective wins.
    init : {"auto", "barycenter", "randomized"} or array of shape (m, m) or (n_init, m, m)
        Start of each restart. ``"barycenter"``: all entries ``1/m``. ``"randomized"``: ``(J + K) / 2`` with ``J``
        the barycenter and ``K`` a random doubly stochastic matrix (scipy's ``P0="randomized"``). ``"auto"``: the
        barycenter for restart 0 and randomized for the others, so more restarts never do worse than one.
        An array gives explicit doubly stochastic starts over the free rows of ``A`` and free rows of ``B``, each in
        increasing index order (as in scipy's ``P0``).
    max_iter, tol : int, float
        Frank–Wolfe stops after ``max_iter`` iterations or when :math:`\lVert P_{t+1} - P_t\rVert_F / \sqrt{m} <`
        ``tol`` (scipy's defaults, 30 and 0.03).
    transport : bool, default False
        Replace the assignment step by entropic optimal transport (GOAT, Saad-Eldin et al. 2021, graspologic's
        ``transport=True``): the direction is the Sinkhorn solution with regulariser ``max|grad| / transport_reg``.
        Smoother path; it recovered unseeded matches where plain FAQ did not. The Sinkhorn step is POT's
        ``sinkhorn_knopp`` as graspologic calls it (same iterates and stopping rule), each restart stopping on its
        own.
    transport_reg, transport_max_iter, transport_tol
        Sinkhorn settings (graspologic's defaults 100, 1000, 0.05).
    two_opt : bool, default False
        Refine the best restart's permutation by best-improvement 2-opt over the free items (each sweep costs two
        n x n products; for modest n).
    batch_size : int, optional
        Restarts per batch; default keeps one batch tensor near 10 million entries (a handful are alive).
    device, dtype
        Where and in what precision to compute (default: the input's device, float64). The assignment step runs
        on CPU (scipy's ``linear_sum_assignment``).
    rng : int, Generator or None
        Randomised starts draw from one child generator per restart, so results do not depend on ``batch_size``.

    Returns
    -------
    MatchResult
        ``col_ind[i]`` the row of ``B`` matched to row ``i`` of ``A``; ``score`` the objective
        :math:`\sum_{ik} A_{ik} B_{c_i c_k}`; ``n_iter`` / ``converged`` of the best restart.

    Notes
    -----
    Cost per iteration and restart: one ``m x m`` product for symmetric inputs, two otherwise (scipy's
    implementation does six), plus one linear assignment. The gradient products are updated, not recomputed: after
    the step :math:`P \leftarrow (1-t)P + tQ`, :math:`A P B^\top \leftarrow (1-t) A P B^\top + t\, A Q B^\top`, and
    for a permutation ``Q`` the term :math:`A Q B^\top` is a row gather of :math:`B^\top` and one product. The
    step size needs no product: :math:`\langle A D B^\top, D\rangle` for ``D = Q - P`` comes from the kept
    products and gathers, so the last iteration (step 0) costs only its assignment. When the matrices are kernels
    ``F F^T`` of ``n x d`` features (see :func:`matching.match`), the products cost :math:`O(m^2 d)` instead of
    :math:`O(m^3)`. The assignment (scipy's ``linear_sum_assignment``, :math:`O(m^3)`) is skipped when every row of
    the gradient has a strict maximum in a distinct column: that is the unique optimum, the one scipy would return.
    With ``transport=True`` each step runs Sinkhorn on the dense ``Q`` instead, and the products with ``Q`` are
    full products (no gather).

    References
    ----------
    Vogelstein et al., "Fast approximate quadratic programming for graph matching", PLOS ONE 2015.
    Fishkind et al., "Seeded graph matching", Pattern Recognition 2019.
    Saad-Eldin et al., "Graph matching via optimal transport", arXiv:2111.05366, 2021.
    """
    import torch

    from align._backend import as_torch, resolve_device

    n_init = check_int("n_init", n_init, min_value=1)
    max_iter = check_int("max_iter", max_iter, min_value=1)
    tol = check_float("tol", tol, min_value=0.0)
    transport_reg = check_float("transport_reg", transport_reg, min_value=0.0, inclusive=False)
    transport_max_iter = check_int("transport_max_iter", transport_max_iter, min_value=1)
    transport_tol = check_float("transport_tol", transport_tol, min_value=0.0, inclusive=False)
    two_opt_max_iter = check_int("two_opt_max_iter", two_opt_max_iter, min_value=0)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, min_value=1)
    rng = check_rng(rng)
    dev = resolve_device(device, A, B) if _factors is None else resolve_device(device, *_factors)
    dtype = dtype or torch.float64

    if _factors is not None:
        a = _Operand(factor=as_torch(_factors[0], device=dev, dtype=dtype))
        b = _Operand(factor=as_torch(_factors[1], device=dev, dtype=dtype))
    else:
        A = _check_square(A, "A")
        B = _check_square(B, "B")
        a = _Operand(dense=as_torch(A, device=dev, dtype=dtype))
        b = _Operand(dense=as_torch(B, device=dev, dtype=dtype))
    n_a, n_b = a.n, b.n
    seeds = check_partial_match(partial_match, n_a, n_b)
    n = max(n_a, n_b)
    a, b = a.padded(n), b.padded(n)
    s = len(seeds)
    m = n - s

    free_a = np.setdiff1d(np.arange(n), seeds[:, 0])
    free_b = np.setdiff1d(np.arange(n), seeds[:, 1])
    order_a = np.concatenate([seeds[:, 0], free_a])
    order_b = np.concatenate([seeds[:, 1], free_b])

    def full_perm(cols_free: np.ndarray) -> np.ndarray:
        perm = np.empty(n, dtype=np.int64)
        perm[order_a] = order_b[np.concatenate([np.arange(s), s + cols_free])]
        return perm

    def finish(perm: np.ndarray, score: float, n_iter: int, converged: bool, n_restarts: int) -> MatchResult:
        col_ind = perm[:n_a].copy()
        col_ind[col_ind >= n_b] = -1
        return MatchResult(col_ind=col_ind, score=score, n_iter=n_iter, converged=converged, method="faq",
                           n_restarts=n_restarts)

    if m == 0:
        perm = full_perm(np.zeros(0, dtype=np.int64))
        return finish(perm, _score(a, b, torch.from_numpy(perm).to(dev)), 0, True, 0)

    # starts
    if isinstance(init, str):
        check_choice("init", init, ("auto", "barycenter", "randomized"))
        starts = None
    else:
        starts = np.asarray(init.detach().cpu() if is_torch(init) else init, dtype=np.float64)
        if starts.ndim == 2:
            starts = starts[None]
        if starts.shape[1:] != (m, m) or starts.shape[0] not in (1, n_init):
            raise ValueError(
                f"`init` must have shape ({m}, {m}) or ({n_init}, {m}, {m}) (free items of A by free items of B), "
                f"got {starts.shape}"
            )
        rows_ok = np.allclose(starts.sum(2), 1, atol=1e-6)
        if (starts < 0).any() or not (rows_ok and np.allclose(starts.sum(1), 1, atol=1e-6)):
            raise ValueError("`init` must be doubly stochastic (non-negative, rows and columns summing to 1)")
        starts = np.broadcast_to(starts, (n_init, m, m))
    children = [np.random.default_rng(c) for c in np.random.SeedSequence(int(rng.integers(2**63))).spawn(n_init)]

    def start(r: int) -> np.ndarray:
        if starts is not None:
            return starts[r]
        J = np.full((m, m), 1.0 / m)
        if init == "barycenter" or (init == "auto" and r == 0):
            return J
        return (J + _random_doubly_stochastic(m, children[r])) / 2

    blocks = _Blocks(a.reordered(torch.from_numpy(order_a).to(dev)), b.reordered(torch.from_numpy(order_b).to(dev)), s)
    if batch_size is None:
        batch_size = restart_batch(n_init, m)

    best = None  # (score, perm, n_iter, converged)
    laps = assignments = 0  # LAPs solved by scipy / assignment steps (the others had unique row argmaxes)
    for lo in range(0, n_init, batch_size):
        idx = list(range(lo, min(n_init, lo + batch_size)))
        P = torch.from_numpy(np.stack([start(r) for r in idx])).to(device=dev, dtype=dtype)
        n_iter = np.zeros(len(idx), dtype=np.int64)
        converged = np.zeros(len(idx), dtype=bool)
        final_P: list = [None] * len(idx)
        alive = np.arange(len(idx))  # batch positions of the restarts still iterating (the rows of P, G1, G2)
        # the gradient products are kept and updated: after a step P <- (1 - t) P + t Q with a permutation Q,
        # A P B^T <- (1 - t) A P B^T + t A Q B^T, and A Q B^T is one product (a gather, then one matmul)
        G1 = blocks.prod(P)
        G2 = G1 if blocks.sym else blocks.prod_t(P)
        for it in range(1, max_iter + 1):
            grad = torch.add(blocks.C, G1, alpha=2.0) if blocks.sym else blocks.C + G1 + G2
            gP = (grad * P).sum(dim=(1, 2))
            G1P = (G1 * P).sum(dim=(1, 2))
            PP = (P * P).sum(dim=(1, 2))
            if transport:
                Q = _sinkhorn_max(grad, transport_reg, transport_max_iter, transport_tol)
                AQB = blocks.prod(Q)
                qq = (AQB * Q).sum(dim=(1, 2))
                gQ = (grad * Q).sum(dim=(1, 2))
                G1Q = (G1 * Q).sum(dim=(1, 2))
                G2Q = G1Q if blocks.sym else (G2 * Q).sum(dim=(1, 2))
                DD = (Q * Q).sum(dim=(1, 2)) - 2 * (Q * P).sum(dim=(1, 2)) + PP
            else:
                g_np = grad.detach().cpu().numpy()
                cols, n_lap = assign_max_batch(g_np)
                laps, assignments = laps + n_lap, assignments + len(g_np)
                cols_t = torch.from_numpy(cols).to(dev)[:, :, None]
                qq = blocks.quad_perm(cols_t[:, :, 0])  # a gather, no product
                # inner products with the permutation Q are gathers: O(m) each
                gQ = grad.gather(2, cols_t).sum(dim=(1, 2))
                G1Q = G1.gather(2, cols_t).sum(dim=(1, 2))
                G2Q = G1Q if blocks.sym else G2.gather(2, cols_t).sum(dim=(1, 2))
                DD = m - 2 * P.gather(2, cols_t).sum(dim=(1, 2)) + PP
            del grad
            # f(P + tD), D = Q - P: linear coefficient <grad, D>, quadratic <A22 D B22^T, D>
            lin = gQ - gP
            quad = qq - G2Q - G1Q + G1P
            # maximise lin * t + quad * t^2 over t in [0, 1]
            t_interior = torch.clamp(-lin / (2 * torch.where(quad < 0, quad, -torch.ones_like(quad))), 0.0, 1.0)
            t_end = (lin + quad >= 0).to(dtype)
            t = torch.where(quad < 0, t_interior, t_end)
            step = t * torch.sqrt(torch.clamp(DD, min=0.0)) / math.sqrt(m)
            # P <- (1 - t) P + t Q, in place
            P.mul_((1.0 - t)[:, None, None])
            if transport:
                P.add_(t[:, None, None] * Q)
            else:
                P.scatter_add_(2, cols_t, t[:, None, None].expand(-1, m, 1).contiguous())
            n_iter[alive] = it
            done = (step < tol).cpu().numpy()
            converged[alive[done]] = True
            if it == max_iter:
                done[:] = True
            for k in np.flatnonzero(done):
                final_P[alive[k]] = P[k].detach().cpu().numpy().copy()
            if done.all():
                break
            # gradient products for the restarts that go on (one product each)
            if transport:
                AtQB = None if blocks.sym else blocks.prod_t(Q)
            else:
                AQB = blocks.prod_perm(cols_t[:, :, 0]) if not done.any() else \
                    blocks.prod_perm(cols_t[torch.from_numpy(~done).to(dev)][:, :, 0])
                AtQB = None
                if not blocks.sym:
                    ck = cols_t[torch.from_numpy(~done).to(dev)][:, :, 0]
                    AtQB = blocks.prod_t_perm(ck)
            if done.any():
                keep = torch.from_numpy(~done).to(dev)
                P, G1, t = P[keep], G1[keep], t[keep]
                if transport:
                    AQB = AQB[keep]
                    AtQB = None if AtQB is None else AtQB[keep]
                if not blocks.sym:
                    G2 = G2[keep]
                alive = alive[~done]
            G1.lerp_(AQB, t[:, None, None])  # (1 - t) G1 + t A Q B^T
            if blocks.sym:
                G2 = G1
            else:
                G2.lerp_(AtQB, t[:, None, None])
        for k, r in enumerate(idx):
            Pk = final_P[k]
            if np.all(Pk.max(axis=1) == 1.0):  # already a permutation matrix: it is its own projection
                cols = Pk.argmax(axis=1)
            else:
                cols = linear_sum_assignment(Pk, maximize=True)[1]
            perm = full_perm(cols)
            score = _score(a, b, torch.from_numpy(perm).to(dev))
            if best is None or score > best[0]:
                best = (score, perm, int(n_iter[k]), bool(converged[k]))
            log.debug("faq restart %d: score %.6g after %d iterations", r, score, n_iter[k])

    score, perm, it_best, conv_best = best
    if not transport:
        log.debug("faq: %d of %d assignment steps needed a LAP", laps, assignments)
    if two_opt:
        A_full = (a.dense if a.dense is not None else a.factor @ a.factor.T).detach().cpu().numpy()
        B_full = (b.dense if b.dense is not None else b.factor @ b.factor.T).detach().cpu().numpy()
        perm, swaps = _two_opt(A_full, B_full, perm, free_a, two_opt_max_iter)
        score = float((A_full * B_full[perm][:, perm]).sum())
        log.debug("2-opt: %d swaps, score %.6g", swaps, score)
    return finish(perm, score, it_best, conv_best, n_init)
