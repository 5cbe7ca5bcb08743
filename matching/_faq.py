"""Seeded graph matching by FAQ (Frank–Wolfe on the relaxed QAP), restarts batched in torch."""
from __future__ import annotations

import logging
import math
from typing import Any, Optional

import numpy as np
from scipy.optimize import linear_sum_assignment

from align._validation import (check_array, check_choice, check_float, check_int, check_partial_match, check_rng,
                               is_torch)

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
            return _Operand(dense=self.dense.index_select(0, order).index_select(1, order))
        return _Operand(factor=self.factor.index_select(0, order))

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
    """One random doubly stochastic matrix: uniform(0, 1) entries balanced by Sinkhorn (the "randomized" start).

    The reference for :func:`_random_doubly_stochastic_batch`, which computes the same for many at once.
    """
    K = np.empty((1, m, m))
    return _random_doubly_stochastic_batch(K, [rng], tol, max_iter)[0]


def _random_doubly_stochastic_batch(K: np.ndarray, rngs: list, tol: float = 1e-3, max_iter: int = 1000) -> np.ndarray:
    """Random doubly stochastic matrices for a whole batch at once, in place in ``K`` (r, m, m); returns ``K``.

    ``K[k]`` is drawn from ``rngs[k]`` (uniform(0, 1), as ``rng.uniform(size=(m, m))``) and balanced as scipy's
    ``quadratic_assignment`` balances its ``P0="randomized"`` start (``scipy.optimize._qap._doubly_stochastic``):
    scalings ``c = 1 / (r K)``, ``r = 1 / (K c)`` until every row and column sum of ``diag(r) K diag(c)`` is within
    ``tol`` of 1, each problem stopping on its own (its scalings are frozen), so ``K[k]`` does not depend on the
    other problems of the batch. Two batched matrix–vector products per step and no ``(r, m, m)`` temporaries.
    """
    for k, g in enumerate(rngs):
        g.random(out=K[k])
    c = 1.0 / K.sum(axis=1)  # (r, m)
    Kc = np.matmul(K, c[:, :, None])[:, :, 0]
    r = 1.0 / Kc
    alive = np.ones(len(K), dtype=bool)
    for _ in range(max_iter):
        rK = np.matmul(r[:, None, :], K)[:, 0]
        ok = (np.abs(r * Kc - 1) < tol).all(axis=1) & (np.abs(c * rK - 1) < tol).all(axis=1)
        alive &= ~ok
        if not alive.any():
            break
        c = np.where(alive[:, None], 1.0 / rK, c)
        Kc = np.matmul(K, c[:, :, None])[:, :, 0]
        r = np.where(alive[:, None], 1.0 / Kc, r)
    K *= r[:, :, None]
    K *= c[:, None, :]
    return K


def _lap_solver(name: str):
    """The LAP routine for ``lap_solver``: ``lap.lapjvx`` (LAPJV, package ``lapx``) or None for scipy's."""
    if name == "scipy":
        return None
    try:
        import lap  # the lapx package (module `lap`): LAPJV, several times scipy's speed on FAQ's gradients

        return lap.lapjvx
    except ImportError:
        if name == "lapjv":
            from align._validation import MissingPackageError

            raise MissingPackageError("lap_solver='lapjv' needs the lapx package: pip install lapx "
                                      "(or use lap_solver='scipy')") from None
        return None


def _solve_min(cost: np.ndarray, solver, projection: bool = False) -> np.ndarray:
    """Columns of a minimum-cost assignment of the square ``cost`` (rows in order).

    ``projection``: ``cost`` is a negated near-permutation ``P``, where ``lap.lapjv`` measured faster than
    ``lapjvx`` (on FAQ's gradients ``lapjvx`` is the faster); both are the same LAPJV.
    """
    if solver is None:
        return linear_sum_assignment(cost)[1]
    if projection:
        import lap

        return lap.lapjv(cost, return_cost=False)[0].astype(np.int64)
    rows, cols = solver(cost, return_cost=False)
    out = np.empty(len(cost), dtype=np.int64)
    out[rows] = cols
    return out


def _assign_min_batch(cost: np.ndarray, solver, projection: bool = False) -> tuple[np.ndarray, int]:
    """Minimum-cost assignment of each square matrix of ``cost`` (r, m, m): columns (r, m), and LAPs solved.

    Where the row argmins are distinct (a permutation), every row sits at its minimum, so that assignment is
    optimal, and it is the only optimum unless some row ties; the LAP runs for the other matrices only. With scipy's
    solver the row minima must also be strict (then it is the unique optimum, exactly what scipy would return, so
    ties still break as scipy's do); LAPJV breaks ties its own way anyway, so there distinct argmins suffice.
    """
    r, m, _ = cost.shape
    arg = cost.argmin(axis=2)
    ok = np.zeros((r, m), dtype=bool)
    ok[np.arange(r)[:, None], arg] = True
    ok = ok.all(axis=1)
    if solver is None and ok.any():
        top = np.take_along_axis(cost, arg[:, :, None], axis=2)
        ok &= ((cost <= top).sum(axis=2) == 1).all(axis=1)
    solve = np.flatnonzero(~ok)
    for k in solve:
        arg[k] = _solve_min(cost[k], solver, projection)
    return arg, len(solve)


#: Up to this many free items (symmetric dense sides), FAQ computes ``A Q B^T`` before the step size and reads
#: :math:`\langle A Q B^\top, Q\rangle` from it; above, from two gathers (a column gather costs about as much as
#: the product at m = 90 and a fifth of it at m = 450, measured on one core).
PRODUCT_FIRST_MAX_M = 200


def _bdot(X, Y):
    """Inner products of the matching matrices of two batches (r, m, m): one pass, no temporary."""
    import torch

    r = X.shape[0]
    return torch.bmm(X.reshape(r, 1, -1), Y.reshape(r, -1, 1)).view(r)


class _FrankWolfe:
    """The FAQ iteration for a batch of restarts, on buffers allocated once and reused for every batch.

    State per restart (rows of the ``(batch, m, m)`` buffers): ``P``; for dense sides ``G1 = A22 P B22^T`` (and
    ``G2 = A22^T P B22`` when not symmetric), updated by ``G <- (1 - t) G + t A Q B^T`` after each step, where for a
    permutation ``Q`` the product ``A Q B^T`` is a row gather of ``B^T`` and one matrix product; for kernel factors
    ``K = F F^T`` the ``d x d`` core ``M = Fn^T P Gn`` instead (``G1 = Fn M Gn^T``). The scalars of the line search,
    :math:`\\langle C, P\\rangle`, :math:`\\langle A P B^\\top, P\\rangle` and :math:`\\lVert P\\rVert^2`, follow
    from the step by recurrences (their terms with ``Q`` are gathers), so an iteration makes no pass over the batch
    for them. Scratch: the negated gradient (the LAP's cost) and, for dense sides, a gather and a product buffer.
    """

    def __init__(self, a, b, s: int, batch: int, solver, dev, dtype, sym: Optional[bool] = None):
        import torch

        self.solver, self.dev, self.dtype = solver, dev, dtype
        self.low_rank = a.factor is not None
        if sym is None:
            sym = a.is_symmetric() and b.is_symmetric()
        self.sym = self.low_rank or sym
        m = a.n - s
        self.m = m
        new = lambda *shape: torch.empty(shape, device=dev, dtype=dtype)  # noqa: E731
        if self.low_rank:
            Fs, Fn = a.factor[:s], a.factor[s:].contiguous()
            Gs, Gn = b.factor[:s], b.factor[s:].contiguous()
            d_a, d_b = Fn.shape[1], Gn.shape[1]
            self.Fn, self.Gn, self.FnT, self.GnT = Fn, Gn, Fn.T.contiguous(), Gn.T.contiguous()
            self.S0 = Fs.T @ Gs  # (d_a, d_b): A_s* B_s*^T and the seed block in the core
            self.M = new(batch, d_a, d_b)
            self.T = new(batch, m, d_b)  # Fn M', then P Gn
            self.Gc = new(batch, m, d_b)  # Gn[cols]
        else:
            A, B = a.dense, b.dense
            self.A22, self.B22 = A[s:, s:].contiguous(), B[s:, s:].contiguous()
            self.A22T = self.A22 if self.sym else self.A22.T.contiguous()
            self.B22T = self.B22 if self.sym else self.B22.T.contiguous()
            # A21 B21^T + A12^T B12 (one product when both sides are symmetric: the two terms are equal)
            self.C = 2.0 * (A[s:, :s] @ B[s:, :s].T) if self.sym else A[s:, :s] @ B[s:, :s].T + A[:s, s:].T @ B[:s, s:]
            self.negC = -self.C
            self.s11 = float((A[:s, :s] * B[:s, :s]).sum())
            self.G1 = new(batch, m, m)
            self.G2 = None if self.sym else new(batch, m, m)
            self.product_first = self.sym and m <= PRODUCT_FIRST_MAX_M
            self.gath = new(batch, m, m)
            self.W = new(batch, m, m)
        self.P = new(batch, m, m)
        self.cost = new(batch, m, m)
        self.laps = self.assignments = 0
        self._host = None  # numpy views of A22, B22, C for the final scores

    @staticmethod
    def n_buffers(low_rank: bool, sym: bool) -> int:
        """``(batch, m, m)`` buffers per restart: P and the cost; dense sides also G1, a gather and a product."""
        return 2 if low_rank else (5 if sym else 6)

    # -- the assignment step ------------------------------------------------------------------------------------
    def assign(self, cost):
        """Minimum-cost assignment of each ``cost[k]`` (r, m, m): columns (r, m) on the device."""
        import torch

        r = cost.shape[0]
        self.assignments += r
        if cost.device.type == "cpu":
            cols, n_lap = _assign_min_batch(cost.numpy(), self.solver)
            self.laps += n_lap
            return torch.from_numpy(cols)
        cols, n_lap = _assign_min_batch(cost.cpu().numpy(), self.solver)
        self.laps += n_lap
        return torch.from_numpy(cols).to(cost.device)

    def project(self, P) -> np.ndarray:
        """Nearest permutations to final ``P`` (k, m, m): maximum-weight assignments, columns (k, m).

        One restart at a time, on a view of the buffer (no ``(k, m, m)`` copy): row argmaxes where they are distinct
        (and strict, for scipy's solver), else the LAP on ``-P[k]``.
        """
        out = np.empty((len(P), self.m), dtype=np.int64)
        for k in range(len(P)):
            Pk = P[k].detach().cpu().numpy()
            arg = Pk.argmax(axis=1)
            hit = np.zeros(self.m, dtype=bool)
            hit[arg] = True
            ok = hit.all()
            if ok and self.solver is None:
                ok = bool(((Pk >= Pk[np.arange(self.m), arg][:, None]).sum(axis=1) == 1).all())
            out[k] = arg if ok else _solve_min(-Pk, self.solver, projection=True)
        return out

    def score(self, cols: np.ndarray) -> float:
        r""":math:`\sum_{ik} A_{ik} B_{p_i p_k}` of the permutation with free columns ``cols``, from the blocks."""
        import torch

        if self.low_rank:
            c = torch.from_numpy(np.asarray(cols, dtype=np.int64)).to(self.dev)
            return float((self.S0 + self.FnT @ self.Gn[c]).square().sum())
        if self._host is None:
            self._host = tuple(x.detach().cpu().numpy() for x in (self.A22, self.B22, self.C))
        A22, B22, C = self._host
        return float(self.s11 + C[np.arange(self.m), cols].sum() + (A22 * B22[cols][:, cols]).sum())

    # -- one batch ----------------------------------------------------------------------------------------------
    def run(self, r: int, max_iter: int, tol: float):
        """Iterate restarts ``P[:r]`` (filled by the caller) to convergence; returns per restart
        ``(cols of the projected permutation, score, n_iter, converged)``, in batch order.

        The per-restart scalars (inner products with ``Q``, the step size, the recurrences) are computed in numpy
        from one transfer per iteration: a dozen tiny torch operations per iteration would cost more than the
        whole iteration at small ``m``.
        """
        import torch

        m, dev, dtype = self.m, self.dev, self.dtype
        P = self.P
        alive = np.arange(r)
        results: list = [None] * r
        host = lambda *xs: torch.stack(xs).double().cpu().numpy()  # noqa: E731
        if self.low_rank:
            torch.matmul(P[:r], self.Gn, out=self.T[:r])
            torch.matmul(self.FnT, self.T[:r], out=self.M[:r])  # M = Fn^T P Gn
            M = self.M[:r]
            CP, G1P, PP = host(2.0 * (self.S0 * M).sum(dim=(1, 2)), M.square().sum(dim=(1, 2)), _bdot(P[:r], P[:r]))
        else:
            torch.matmul(P[:r], self.B22T, out=self.gath[:r])  # P B22^T
            torch.matmul(self.A22, self.gath[:r], out=self.G1[:r])
            if not self.sym:
                torch.matmul(P[:r], self.B22, out=self.gath[:r])
                torch.matmul(self.A22T, self.gath[:r], out=self.G2[:r])
            CP, G1P, PP = host(P[:r].reshape(r, -1) @ self.C.reshape(-1), _bdot(P[:r], self.G1[:r]),
                               _bdot(P[:r], P[:r]))
        for it in range(1, max_iter + 1):
            Pr, cost = P[:r], self.cost[:r]
            # the LAP's cost: the negated gradient C + G1 + G2
            if self.low_rank:
                Mp = torch.add(self.S0, self.M[:r]).mul_(-2.0)  # C + 2 G1 = Fn (2 S0 + 2 M) Gn^T
                torch.matmul(self.Fn, Mp, out=self.T[:r])
                torch.matmul(self.T[:r], self.GnT, out=cost)
            elif self.sym:
                torch.add(self.negC, self.G1[:r], alpha=-2.0, out=cost)
            else:
                torch.sub(self.negC, self.G1[:r], out=cost).sub_(self.G2[:r])
            cols = self.assign(cost)
            ci = cols[:, :, None]
            # inner products with the permutation Q: gathers, O(m) each; one transfer for all of them
            if self.low_rank:
                Gc = self.Gc[:r]
                torch.index_select(self.Gn, 0, cols.reshape(-1), out=Gc.view(r * m, -1))
                FQG = torch.matmul(self.FnT, Gc)  # Fn^T Q Gn (r, d, d)
                g = torch.cat([cost.gather(2, ci), Pr.gather(2, ci)], dim=2).sum(dim=1)  # (r, 2)
                negQ, PQ = host(g[:, 0], g[:, 1])
                qq, G1Q, CQ = host(FQG.square().sum(dim=(1, 2)), (self.M[:r] * FQG).sum(dim=(1, 2)),
                                   2.0 * (self.S0 * FQG).sum(dim=(1, 2)))
                G2Q = G1Q
            else:
                gath, W = self.gath[:r], self.W[:r]
                torch.index_select(self.B22T, 0, cols.reshape(-1), out=gath.view(r * m, m))  # Q B22^T
                parts = [cost.gather(2, ci), Pr.gather(2, ci), self.G1[:r].gather(2, ci),
                         self.C.expand(r, m, m).gather(2, ci)]
                if not self.sym:
                    parts.append(self.G2[:r].gather(2, ci))
                if self.product_first:
                    # small m: the next product A22 Q B22^T now (it does not depend on the step), qq is a gather of
                    # it; one product too many on a restart's last iteration, but no column gather per iteration
                    torch.matmul(self.A22, gath, out=W)
                    parts.append(W.gather(2, ci))
                    g = host(*torch.cat(parts, dim=2).sum(dim=1).T)
                    qq = g[-1]
                else:
                    # <A22 Q B22^T, Q> = sum_ik A22[i, k] B22[c_i, c_k]: a row gather, a column gather, no product
                    torch.gather(gath, 2, cols[:, None, :].expand(r, m, m), out=W)
                    g = host(*torch.cat(parts, dim=2).sum(dim=1).T, W.reshape(r, -1) @ self.A22T.reshape(-1))
                    qq = g[-1]
                negQ, PQ, G1Q, CQ = g[0], g[1], g[2], g[3]
                G2Q = G1Q if self.sym else g[4]
            gQ = -negQ
            gP = CP + 2.0 * G1P
            # f(P + tD), D = Q - P: linear coefficient <grad, D>, quadratic <A22 D B22^T, D>
            lin = gQ - gP
            quad = qq - G2Q - G1Q + G1P
            # maximise lin * t + quad * t^2 over t in [0, 1]
            with np.errstate(divide="ignore", invalid="ignore"):
                t = np.where(quad < 0, np.clip(-lin / (2.0 * np.where(quad < 0, quad, -1.0)), 0.0, 1.0),
                             (lin + quad >= 0).astype(np.float64))
            DD = m - 2.0 * PQ + PP
            step = t * np.sqrt(np.maximum(DD, 0.0)) / math.sqrt(m)
            # P <- (1 - t) P + t Q in place; the scalars by their recurrences
            s_ = 1.0 - t
            t_dev = torch.from_numpy(t).to(device=dev, dtype=dtype)
            Pr.mul_(torch.from_numpy(s_).to(device=dev, dtype=dtype)[:, None, None])
            Pr.scatter_add_(2, ci, t_dev[:, None, None].expand(r, m, 1).contiguous())
            PP = s_ * s_ * PP + 2.0 * t * s_ * PQ + t * t * m
            CP = s_ * CP + t * CQ
            G1P = s_ * s_ * G1P + t * s_ * (G1Q + G2Q) + t * t * qq
            conv = step < tol
            done = conv.copy() if it < max_iter else np.ones(r, dtype=bool)
            fin = np.flatnonzero(done)
            if len(fin):
                proj = self.project([Pr[k] for k in fin])
                cols_h = cols.cpu().numpy()
                f_Q = None if self.low_rank else self.s11 + CQ + qq
                for k, pc in zip(fin, proj):
                    # the objective of Q is s11 + <C, Q> + <A22 Q B22^T, Q>, both terms already at hand
                    same = f_Q is not None and np.array_equal(pc, cols_h[k])
                    results[alive[k]] = (pc, float(f_Q[k]) if same else self.score(pc), it, bool(conv[k]))
            if done.all():
                break
            if done.any():  # compact the restarts that go on to the front of the buffers (in place, in order)
                keep = np.flatnonzero(~done)
                for j, src in enumerate(keep):
                    if j != src:
                        P[j].copy_(P[src])
                        if self.low_rank:
                            self.M[j].copy_(self.M[src])
                        else:
                            self.G1[j].copy_(self.G1[src])
                            if self.product_first:
                                self.W[j].copy_(self.W[src])
                            if not self.sym:
                                self.G2[j].copy_(self.G2[src])
                kt = torch.from_numpy(keep).to(dev)
                t_dev, cols = t_dev[kt], cols[kt]
                PP, CP, G1P = PP[keep], CP[keep], G1P[keep]
                if self.low_rank:
                    FQG = FQG[kt]
                alive = alive[keep]
                r = len(keep)
            # the gradient products of the next iteration: one product with a permutation each
            tt = t_dev[:, None, None]
            if self.low_rank:
                self.M[:r].lerp_(FQG, tt)
                continue
            gath, W = self.gath[:r], self.W[:r]
            if not self.product_first:
                if done.any():  # gath holds Q B22^T of the restarts before compaction
                    torch.index_select(self.B22T, 0, cols.reshape(-1), out=gath.view(r * m, m))
                torch.matmul(self.A22, gath, out=W)  # A22 Q B22^T
            self.G1[:r].lerp_(W, tt)
            if not self.sym:
                torch.index_select(self.B22, 0, cols.reshape(-1), out=gath.view(r * m, m))
                torch.matmul(self.A22T, gath, out=W)  # A22^T Q B22
                self.G2[:r].lerp_(W, tt)
        return results


def _transport_batch(blocks, a, b, lo, hi, fill_starts, full_perm, best, m, max_iter, tol, reg, s_max_iter, s_tol,
                     dev, dtype):
    """Restarts ``lo..hi-1`` of the transport (GOAT) relaxation: the direction is a dense Sinkhorn plan ``Q``."""
    import torch

    P = torch.empty((hi - lo, m, m), device=dev, dtype=dtype)
    fill_starts(P, lo, hi)
    n_iter = np.zeros(hi - lo, dtype=np.int64)
    converged = np.zeros(hi - lo, dtype=bool)
    final_P: list = [None] * (hi - lo)
    alive = np.arange(hi - lo)  # batch positions of the restarts still iterating (the rows of P, G1, G2)
    G1 = blocks.prod(P)
    G2 = G1 if blocks.sym else blocks.prod_t(P)
    for it in range(1, max_iter + 1):
        grad = torch.add(blocks.C, G1, alpha=2.0) if blocks.sym else blocks.C + G1 + G2
        gP = (grad * P).sum(dim=(1, 2))
        G1P = (G1 * P).sum(dim=(1, 2))
        PP = (P * P).sum(dim=(1, 2))
        Q = _sinkhorn_max(grad, reg, s_max_iter, s_tol)
        AQB = blocks.prod(Q)
        qq = (AQB * Q).sum(dim=(1, 2))
        gQ = (grad * Q).sum(dim=(1, 2))
        G1Q = (G1 * Q).sum(dim=(1, 2))
        G2Q = G1Q if blocks.sym else (G2 * Q).sum(dim=(1, 2))
        DD = (Q * Q).sum(dim=(1, 2)) - 2 * (Q * P).sum(dim=(1, 2)) + PP
        del grad
        lin = gQ - gP
        quad = qq - G2Q - G1Q + G1P
        t_interior = torch.clamp(-lin / (2 * torch.where(quad < 0, quad, -torch.ones_like(quad))), 0.0, 1.0)
        t = torch.where(quad < 0, t_interior, (lin + quad >= 0).to(dtype))
        step = t * torch.sqrt(torch.clamp(DD, min=0.0)) / math.sqrt(m)
        P.mul_((1.0 - t)[:, None, None])
        P.add_(t[:, None, None] * Q)
        n_iter[alive] = it
        done = (step < tol).cpu().numpy()
        converged[alive[done]] = True
        if it == max_iter:
            done[:] = True
        for k in np.flatnonzero(done):
            final_P[alive[k]] = P[k].detach().cpu().numpy().copy()
        if done.all():
            break
        AtQB = None if blocks.sym else blocks.prod_t(Q)
        if done.any():
            keep = torch.from_numpy(~done).to(dev)
            P, G1, t, AQB = P[keep], G1[keep], t[keep], AQB[keep]
            if not blocks.sym:
                G2, AtQB = G2[keep], AtQB[keep]
            alive = alive[~done]
        G1.lerp_(AQB, t[:, None, None])  # (1 - t) G1 + t A Q B^T
        if blocks.sym:
            G2 = G1
        else:
            G2.lerp_(AtQB, t[:, None, None])
    for k, r in enumerate(range(lo, hi)):
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
    return best


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


#: Bytes of the ``(batch, m, m)`` buffers of one batch of restarts, all together, by default: restarts run together
#: until their buffers would pass this (at least one restart). scipy's FAQ holds about ten ``m x m`` matrices;
#: this keeps the memory FAQ adds within about twice that at ``n = 1,000`` (benchmarks/README.md measures it).
BATCH_BYTES = 64 * 2**20

# Entries of one (batch, m, m) tensor at most, by default (what matching.check_match_memory budgets for).
BATCH_ENTRIES = BATCH_BYTES // 8 // 2


def restart_batch(n_init: int, m: int, tensors: int = 5, itemsize: int = 8, memory_budget: Optional[int] = None) -> int:
    """Restarts per batch: as many as keep ``tensors`` buffers of shape ``(batch, m, m)`` within ``memory_budget``
    bytes (default :data:`BATCH_BYTES`), at least one."""
    budget = BATCH_BYTES if memory_budget is None else memory_budget
    return max(1, min(n_init, int(budget) // max(tensors * m * m * itemsize, 1)))


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
    memory_budget: Optional[int] = None,
    lap_solver: str = "auto",
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
        Restarts, run together in batches (buffers of shape ``(batch, m, m)``, see ``memory_budget``); the best by
        objective wins (the first of equals).
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
        Restarts per batch (one set of ``(batch, m, m)`` buffers, allocated once and reused). Default: as many as
        fit in ``memory_budget``. Results do not depend on it.
    memory_budget : int, optional
        Bytes for the batch buffers (default :data:`BATCH_BYTES`, 64 MiB): 2 ``(m, m)`` matrices per restart for
        kernel factors, 5 for symmetric dense sides, 6 otherwise (10 with ``transport=True``), at least one
        restart. Sizes the batch when ``batch_size`` is not given.
    lap_solver : {"auto", "lapjv", "scipy"}, default "auto"
        The linear assignment solver of the direction step and the final projection: ``"lapjv"`` is
        Jonker–Volgenant (``lap.lapjvx`` of the ``lapx`` package), ``"scipy"`` is
        ``scipy.optimize.linear_sum_assignment``; ``"auto"`` takes ``lapx`` when it is installed, else scipy. Both
        are exact: where the optimum is unique they return the same assignment, and only ties (several optimal
        assignments, as on unweighted graphs) may break differently, so the path can differ from scipy's FAQ
        while being as valid. Timings: benchmarks/README.md.
    device, dtype
        Where and in what precision to compute (default: the input's device, float64). The assignment step runs
        on CPU.
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
    products and gathers, and :math:`\langle C, P\rangle`, :math:`\langle A P B^\top, P\rangle`,
    :math:`\lVert P\rVert^2` follow from the step by recurrences, so the last iteration (step 0) costs only its
    assignment; up to :data:`PRODUCT_FIRST_MAX_M` free items the product comes first and the quadratic term is a
    gather of it. The objective of each answer comes from the same gathers. When the matrices are kernels
    ``F F^T`` of ``n x d`` features (see :func:`matching.match`), the solver keeps the ``d x d`` core
    ``F^T P G`` instead of ``A P B^T`` and the products cost :math:`O(m^2 d)` instead of :math:`O(m^3)`. The
    restarts of a batch share buffers allocated once per call (``memory_budget``); the random starts of a batch
    are balanced together. The assignment (:math:`O(m^3)`) is skipped when the gradient's row maxima lie in
    distinct columns (for ``lap_solver="scipy"`` also strict: then it is the unique optimum, the one scipy would
    return). The one-product symmetric path is taken for exactly symmetric inputs (``torch.equal(A, A.T)``);
    :func:`matching.kernel_matrix` returns such matrices. With ``transport=True`` each step runs Sinkhorn on the
    dense ``Q`` instead, and the products with ``Q`` are full products (no gather). Speed and memory against scipy:
    benchmarks/README.md.

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
    if memory_budget is not None:
        memory_budget = check_int("memory_budget", memory_budget, min_value=1)
    check_choice("lap_solver", lap_solver, ("auto", "lapjv", "scipy"))
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

    free_a, free_b = np.ones(n, dtype=bool), np.ones(n, dtype=bool)
    free_a[seeds[:, 0]] = free_b[seeds[:, 1]] = False
    free_a, free_b = np.flatnonzero(free_a), np.flatnonzero(free_b)
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

    def fill_starts(P, lo: int, hi: int) -> None:
        """Starts of restarts ``lo..hi-1`` into ``P[:hi - lo]``; the random ones balanced together (one batch)."""
        if starts is not None:
            P[: hi - lo].copy_(torch.from_numpy(np.array(starts[lo:hi])))
            return
        first = lo + 1 if (init == "auto" and lo == 0) else lo  # restart 0 of "auto" is the barycenter
        if init == "barycenter":
            first = hi
        P[: first - lo].fill_(1.0 / m)
        if first < hi:
            view = P[first - lo: hi - lo]
            inplace = view.device.type == "cpu" and view.dtype == torch.float64
            K = view.numpy() if inplace else np.empty(tuple(view.shape))
            _random_doubly_stochastic_batch(K, children[first:hi])
            K += 1.0 / m  # (J + K) / 2, as scipy's P0="randomized"
            K /= 2.0
            if not inplace:
                view.copy_(torch.from_numpy(K))

    ra = a.reordered(torch.from_numpy(order_a).to(dev))
    rb = b.reordered(torch.from_numpy(order_b).to(dev))
    best = None  # (score, perm, n_iter, converged)
    if not transport:
        sym = ra.factor is not None or (ra.is_symmetric() and rb.is_symmetric())
        itemsize = torch.empty((), dtype=dtype).element_size()
        if batch_size is None:
            batch_size = restart_batch(n_init, m, _FrankWolfe.n_buffers(ra.factor is not None, sym), itemsize,
                                       memory_budget)
        fw = _FrankWolfe(ra, rb, s, min(batch_size, n_init), _lap_solver(lap_solver), dev, dtype, sym)
        for lo in range(0, n_init, batch_size):
            hi = min(n_init, lo + batch_size)
            fill_starts(fw.P, lo, hi)
            for r, (cols, score, it, conv) in zip(range(lo, hi), fw.run(hi - lo, max_iter, tol)):
                log.debug("faq restart %d: score %.6g after %d iterations", r, score, it)
                if best is None or score > best[0]:
                    best = (score, full_perm(cols), it, conv)
        log.debug("faq: %d of %d assignment steps needed a LAP", fw.laps, fw.assignments)
        del fw
    else:
        blocks = _Blocks(ra, rb, s)
        if batch_size is None:
            batch_size = restart_batch(n_init, m, 10, torch.empty((), dtype=dtype).element_size(), memory_budget)
        for lo in range(0, n_init, batch_size):
            best = _transport_batch(blocks, a, b, lo, min(n_init, lo + batch_size), fill_starts, full_perm, best,
                                    m, max_iter, tol, transport_reg, transport_max_iter, transport_tol, dev, dtype)

    score, perm, it_best, conv_best = best
    if two_opt:
        A_full = (a.dense if a.dense is not None else a.factor @ a.factor.T).detach().cpu().numpy()
        B_full = (b.dense if b.dense is not None else b.factor @ b.factor.T).detach().cpu().numpy()
        perm, swaps = _two_opt(A_full, B_full, perm, free_a, two_opt_max_iter)
        if swaps:
            score = float((A_full * B_full[perm][:, perm]).sum())
        log.debug("2-opt: %d swaps, score %.6g", swaps, score)
    return finish(perm, score, it_best, conv_best, n_init)
