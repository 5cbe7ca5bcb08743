"""The Frank–Wolfe engine of :func:`matching.faq`: the two sides of the QAP (dense matrices or kernel factors) and
the batched iteration whose directions are assignments (buffers, recurrences, exact line search, projection).

The front door (checks, starts, batches of restarts, 2-opt) is :mod:`matching._faq`; the transport (GOAT) iteration
:mod:`matching._faq_transport`; the linear assignment helpers :mod:`matching._assign`.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ._assign import _assign_min_batch, _solve_min, _strict_ties


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


#: Integer-valued sides (unweighted or integer-weighted graphs) whose free blocks satisfy
#: ``m * max|A22| * max|B22| < EXACT_F32_BOUND`` get the per-iteration product ``A22 (Q B22^T)`` in float32: every
#: partial sum is an integer below 2^24, so float32 holds it exactly and the result equals the float64 product bit
#: for bit, at about half the cost on CPU (much less on most GPUs).
EXACT_F32_BOUND = 2.0**24


def exact_in_float32(a: "_Operand", b: "_Operand", s: int, dtype) -> bool:
    """Whether ``A22 Q B22^T`` for permutations ``Q`` is exact in float32 (see :data:`EXACT_F32_BOUND`)."""
    import torch

    if a.factor is not None or b.factor is not None or dtype != torch.float64:
        return False
    A22, B22 = a.dense[s:, s:], b.dense[s:, s:]
    m = A22.shape[0]
    if m == 0:
        return False
    top_a, top_b = float(A22.abs().max()), float(B22.abs().max())
    if not (m * top_a * top_b < EXACT_F32_BOUND):  # also False for NaN / inf
        return False
    for M in (A22, B22):
        if not (torch.equal(M[0], M[0].round()) and torch.equal(M, M.round())):  # one row first: kernels leave here
            return False
    return True


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

    def __init__(self, a, b, s: int, batch: int, solver, dev, dtype, sym: Optional[bool] = None,
                 exact32: bool = False):
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
            # exact float32 products (integer-valued sides, exact_in_float32): float32 copies and two half-size
            # scratch buffers, one float64 buffer's worth (n_buffers counts it)
            self.exact32 = bool(exact32)
            if self.exact32:
                f32 = torch.float32
                self.A22_32 = self.A22.to(f32)
                self.A22T_32 = self.A22_32 if self.sym else self.A22T.to(f32)
                self.gath32 = torch.empty((batch, m, m), device=dev, dtype=f32)
                self.W32 = torch.empty((batch, m, m), device=dev, dtype=f32)
        self.P = new(batch, m, m)
        self.cost = new(batch, m, m)
        self.laps = self.assignments = 0
        self._host = None  # numpy views of A22, B22, C for the final scores

    @staticmethod
    def n_buffers(low_rank: bool, sym: bool, exact32: bool = False) -> int:
        """``(batch, m, m)`` buffers per restart: P and the cost; dense sides also G1, a gather and a product (and
        with exact float32 products two float32 scratch buffers, one buffer's worth)."""
        return 2 if low_rank else (5 if sym else 6) + int(exact32)

    def _aqb(self, left, left32, gath, W) -> None:
        """``W = left @ gath`` (``left`` A22 or its transpose, ``gath`` a row gather of B22 or B22^T), in float32
        where that is exact (:func:`exact_in_float32`), else in the working dtype."""
        import torch

        if not self.exact32:
            torch.matmul(left, gath, out=W)
            return
        r = gath.shape[0]
        g32, w32 = self.gath32[:r], self.W32[:r]
        g32.copy_(gath)
        torch.matmul(left32, g32, out=w32)
        W.copy_(w32)

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
        (and strict, for scipy's solver or a callable), else the LAP on ``-P[k]``.
        """
        out = np.empty((len(P), self.m), dtype=np.int64)
        for k in range(len(P)):
            Pk = P[k].detach().cpu().numpy()
            arg = Pk.argmax(axis=1)
            hit = np.zeros(self.m, dtype=bool)
            hit[arg] = True
            ok = hit.all()
            if ok and _strict_ties(self.solver):
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
                    self._aqb(self.A22, getattr(self, "A22_32", None), gath, W)
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
                self._aqb(self.A22, getattr(self, "A22_32", None), gath, W)  # A22 Q B22^T
            self.G1[:r].lerp_(W, tt)
            if not self.sym:
                torch.index_select(self.B22, 0, cols.reshape(-1), out=gath.view(r * m, m))
                self._aqb(self.A22T, getattr(self, "A22T_32", None), gath, W)  # A22^T Q B22
                self.G2[:r].lerp_(W, tt)
        return results

